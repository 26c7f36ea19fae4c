"""Between ``emit`` and the spool: the :class:`~selligent_segment.intake._protocol.Intake`
that holds accepted records (in memory, or journaled to disk), the encoder thread that
moves them into the spool, and the back-pressure that applies ``max_pending`` and
``on_full``. Private: import the public names from :mod:`selligent_segment`."""
