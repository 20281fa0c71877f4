"""What a developer sees in mitmweb and the console: the LLM content view and commands."""
