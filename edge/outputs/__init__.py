"""Where results go: the terminal, plain lines or JSON lines on stdout (sinks)."""
