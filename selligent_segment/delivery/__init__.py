"""Sending: the dispatcher (a fixed pool of sender threads shared by every tenant,
fair scheduling, rate caps per write key, settling and bisection), the retry policy, the
HTTP transport, write keys and the counters. Private: import the public names from
:mod:`selligent_segment`."""
