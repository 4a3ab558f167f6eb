"""The Latent Canvas desktop app (PySide6 + qasync). Talks to core/ only through job dataclasses and
progress events; torch loads lazily inside the worker thread so the window appears fast."""
