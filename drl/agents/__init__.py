"""One file per agent."""
