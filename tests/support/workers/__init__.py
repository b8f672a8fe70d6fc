"""Worker scripts the end-to-end tests run as processes (``python <path>``); see ``support.processes``."""
