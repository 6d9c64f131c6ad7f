"""Jobs: index sync and cache management, plain coroutines blind to the scheduler."""
