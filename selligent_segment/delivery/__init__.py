"""Sending: the dispatcher (the sender pool and one turn of a tenant), the schedule of
turns (ready queue, timers, fairness), the rate caps per write key, the retry policy and
backoff state, settling and bisection of refused batches, the HTTP transport, write keys
and the counters. Private: import the public names from :mod:`selligent_segment`."""
