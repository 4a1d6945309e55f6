from queuectl.cli import entry

entry()
