"""Jobs: plain coroutines blind to the scheduler, listed with their schedules in :mod:`pypimirror.jobs.registry`."""
