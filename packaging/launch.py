"""Entry script for the standalone build (PyInstaller runs a script, not a console_scripts entry)."""

from desktop.app import main

if __name__ == "__main__":
    raise SystemExit(main())
