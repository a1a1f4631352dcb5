"""Timing only: APScheduler jobs that call one models function each, run by the lease holder."""
