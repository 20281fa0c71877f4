"""USD budgets: price arithmetic (pure) and the second hold taken beside the token hold."""
