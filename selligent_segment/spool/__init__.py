"""Where accepted events wait until they are delivered: the spool protocol and its
engines (memory; the durable journal + SQLite file; a PostgreSQL table many hosts share),
recovery of dead owners, the schema and its migrations, and the operators' views
(``SpoolView``: ``SpoolFile``, ``PostgresView``). The spool journals and
decodes its own records: nothing above it knows frames or SQL. Private: import the public
names from :mod:`selligent_segment`."""
