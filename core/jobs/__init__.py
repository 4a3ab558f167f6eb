"""Jobs: one frozen params dataclass + one generator function yielding progress events each."""
