"""The SQL the database exporter runs (PostgreSQL 14+). One statement per fact group.

Server-wide groups run once per target on its first database; per-database groups run on
every database of the target. Times come back in seconds, sizes in bytes. `%(sizes)s` is
false between two size refreshes (exporters.db.sizes_interval): the size functions stat
every file of every relation, the most expensive part of a scrape on a big schema.
"""

SERVER = """
select current_setting('server_version_num')::int,
       current_setting('server_version'),
       extract(epoch from pg_postmaster_start_time())::float8,
       pg_is_in_recovery(),
       (select count(*) from pg_stat_activity where backend_type = 'client backend'),
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       case when pg_is_in_recovery() then null
            else pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 end,
       current_setting('archive_mode'),
       now()
"""

SETTINGS = "select name, reset_val, unit, vartype from pg_settings"

DATABASES = """
select d.datname, d.numbackends, d.xact_commit, d.xact_rollback, d.blks_read, d.blks_hit,
       d.tup_returned, d.tup_fetched, d.tup_inserted, d.tup_updated, d.tup_deleted,
       d.conflicts, d.temp_files, d.temp_bytes, d.deadlocks, coalesce(d.checksum_failures, 0),
       d.blk_read_time / 1000.0, d.blk_write_time / 1000.0,
       d.session_time / 1000.0, d.active_time / 1000.0, d.idle_in_transaction_time / 1000.0,
       d.sessions, d.sessions_abandoned, d.sessions_fatal, d.sessions_killed,
       extract(epoch from d.stats_reset)::float8,
       case when %(sizes)s and has_database_privilege(d.datid, 'CONNECT') then pg_database_size(d.datid) end,
       age(db.datfrozenxid), db.datconnlimit, db.datallowconn
from pg_stat_database d join pg_database db on db.oid = d.datid
where d.datname is not null and not db.datistemplate
"""

CONFLICTS = """
select c.datname, c.confl_tablespace, c.confl_lock, c.confl_snapshot, c.confl_bufferpin, c.confl_deadlock
from pg_stat_database_conflicts c join pg_database db on db.oid = c.datid
where not db.datistemplate
"""

ACTIVITY = """
select coalesce(datname, ''), coalesce(state, 'unknown'), count(*),
       coalesce(max(extract(epoch from now() - xact_start)), 0)::float8,
       coalesce(max(extract(epoch from now() - query_start)) filter (where state = 'active'), 0)::float8,
       count(*) filter (where wait_event_type = 'Lock'),
       coalesce(max(extract(epoch from now() - state_change)) filter (where wait_event_type = 'Lock'), 0)::float8,
       count(*) filter (where state = 'active' and now() - query_start > make_interval(secs => %(slow)s))
from pg_stat_activity
where backend_type = 'client backend' and pid <> pg_backend_pid()
group by 1, 2
"""

LOCKS = """
select coalesce(d.datname, ''), l.mode, l.granted, count(*)
from pg_locks l left join pg_database d on d.oid = l.database
group by 1, 2, 3
"""

BGWRITER = """
select checkpoints_timed, checkpoints_req, checkpoint_write_time / 1000.0, checkpoint_sync_time / 1000.0,
       buffers_checkpoint, buffers_clean, maxwritten_clean, buffers_backend, buffers_backend_fsync,
       buffers_alloc, extract(epoch from stats_reset)::float8
from pg_stat_bgwriter
"""

ARCHIVER = """
select archived_count, failed_count,
       extract(epoch from last_archived_time)::float8, extract(epoch from last_failed_time)::float8
from pg_stat_archiver
"""

REPLICATION = """
select coalesce(nullif(application_name, ''), host(client_addr), 'unknown'), coalesce(state, ''),
       extract(epoch from replay_lag)::float8, extract(epoch from write_lag)::float8,
       extract(epoch from flush_lag)::float8,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8
from pg_stat_replication
"""

STANDBY = """
select case when pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() then 0
            else extract(epoch from now() - pg_last_xact_replay_timestamp()) end::float8,
       coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::float8
"""

SLOTS = """
select slot_name, slot_type, active,
       pg_wal_lsn_diff(case when pg_is_in_recovery() then pg_last_wal_receive_lsn()
                            else pg_current_wal_lsn() end, restart_lsn)::float8
from pg_replication_slots
"""

PGSS_SCHEMA = """
select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace
where e.extname = 'pg_stat_statements'
"""

# {ns} is the extension's schema (quoted identifier). One scan of pg_stat_statements gives
# per-database totals (kind 't', queryid null) and the top entries by total time (kind 'q';
# %(top)s is 3 x N: the collector merges the entries of one statement, then keeps N).
PGSS = """
with s as materialized (
    select dbid, queryid, calls::float8 as calls, total_exec_time, total_plan_time, rows::float8 as rows,
           shared_blks_hit::float8 as hit, shared_blks_read::float8 as rd,
           temp_blks_written::float8 as tmp, mean_exec_time, max_exec_time
    from {ns}.pg_stat_statements(false)
), totals as (
    select 't' as kind, dbid, null::bigint as queryid, sum(calls) as calls,
           sum(total_exec_time) / 1000.0 as exec_s, sum(total_plan_time) / 1000.0 as plan_s,
           sum(rows) as rows, sum(hit) as hit, sum(rd) as rd, sum(tmp) as tmp,
           count(*)::float8 as n, (count(*) filter (where mean_exec_time > %(slow_ms)s))::float8 as slow
    from s group by dbid
), top as (
    select 'q' as kind, dbid, queryid, calls, total_exec_time / 1000.0 as exec_s, null::float8,
           rows, hit, rd, tmp, null::float8, max_exec_time / 1000.0
    from s where queryid is not null
    order by total_exec_time desc limit %(top)s
)
select t.*, d.datname from (select * from totals union all select * from top) t
join pg_database d on d.oid = t.dbid
"""

PGSS_TEXT = """
select d.datname, s.queryid, min(s.query)
from {ns}.pg_stat_statements(true) s join pg_database d on d.oid = s.dbid
where s.queryid = any(%(ids)s)
group by d.datname, s.queryid
"""

# ------------------------------------------------------------------ per database
# Straight from pg_class and the pg_stat_get_* functions: the same values as
# pg_stat_user_tables / pg_statio_user_tables / pg_stat_user_indexes, without their GROUP BY.
# The last columns name a partition's root table (index), for the rollup of exporters/db/budget.py.
TABLES = """
select n.nspname, c.relname, pg_stat_get_numscans(c.oid), pg_stat_get_tuples_returned(c.oid),
       coalesce(x.idx_scan, 0), coalesce(x.idx_tup_fetch, 0) + pg_stat_get_tuples_fetched(c.oid),
       pg_stat_get_tuples_inserted(c.oid), pg_stat_get_tuples_updated(c.oid), pg_stat_get_tuples_deleted(c.oid),
       pg_stat_get_tuples_hot_updated(c.oid), pg_stat_get_live_tuples(c.oid), pg_stat_get_dead_tuples(c.oid),
       pg_stat_get_mod_since_analyze(c.oid),
       extract(epoch from pg_stat_get_last_vacuum_time(c.oid))::float8,
       extract(epoch from pg_stat_get_last_autovacuum_time(c.oid))::float8,
       extract(epoch from pg_stat_get_last_analyze_time(c.oid))::float8,
       extract(epoch from pg_stat_get_last_autoanalyze_time(c.oid))::float8,
       pg_stat_get_vacuum_count(c.oid), pg_stat_get_autovacuum_count(c.oid),
       pg_stat_get_analyze_count(c.oid), pg_stat_get_autoanalyze_count(c.oid),
       pg_stat_get_blocks_fetched(c.oid) - pg_stat_get_blocks_hit(c.oid), pg_stat_get_blocks_hit(c.oid),
       case when c.reltoastrelid <> 0
            then pg_stat_get_blocks_fetched(c.reltoastrelid) - pg_stat_get_blocks_hit(c.reltoastrelid) end,
       case when c.reltoastrelid <> 0 then pg_stat_get_blocks_hit(c.reltoastrelid) end,
       case when %(sizes)s then pg_table_size(c.oid) end,
       age(c.relfrozenxid),
       pr.nspname, pr.relname
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
left join lateral (select rn.nspname, r.relname from pg_class r join pg_namespace rn on rn.oid = r.relnamespace
                   where c.relispartition and r.oid = pg_partition_root(c.oid)) pr on true
left join lateral (select sum(pg_stat_get_numscans(i.indexrelid))::bigint as idx_scan,
                          sum(pg_stat_get_tuples_fetched(i.indexrelid))::bigint as idx_tup_fetch
                   from pg_index i where i.indrelid = c.oid) x on true
where c.relkind in ('r', 't', 'm') and n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname !~ '^pg_toast'
order by c.relpages desc, c.oid
limit %(max_tables)s
"""

INDEXES = """
select n.nspname, t.relname, c.relname, pg_stat_get_numscans(i.indexrelid), pg_stat_get_tuples_returned(i.indexrelid),
       pg_stat_get_tuples_fetched(i.indexrelid),
       case when %(sizes)s then pg_relation_size(i.indexrelid) end,
       (i.indisunique or i.indisprimary or i.indisexclusion or i.indexrelid in (select conindid from pg_constraint)),
       pg_stat_get_blocks_fetched(i.indexrelid) - pg_stat_get_blocks_hit(i.indexrelid), pg_stat_get_blocks_hit(i.indexrelid),
       case when c.relispartition then (select r.relname from pg_class r where r.oid = pg_partition_root(i.indexrelid)) end
from pg_index i join pg_class c on c.oid = i.indexrelid join pg_class t on t.oid = i.indrelid
join pg_namespace n on n.oid = t.relnamespace
where t.relkind in ('r', 't', 'm') and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
order by c.relpages desc, i.indexrelid
limit %(max_indexes)s
"""

PARTITIONS = """
select pn.nspname, pc.relname, pg_get_expr(c.relpartbound, c.oid)
from pg_partitioned_table p
join pg_class pc on pc.oid = p.partrelid
join pg_namespace pn on pn.oid = pc.relnamespace
left join pg_inherits i on i.inhparent = pc.oid
left join pg_class c on c.oid = i.inhrelid
where pn.nspname not in ('pg_catalog', 'information_schema')
"""

PARTITIONED_SIZES = """
select pn.nspname, pc.relname, sum(pg_total_relation_size(t.relid))::float8, sum(coalesce(st.n_live_tup, 0))::float8
from pg_partitioned_table p
join pg_class pc on pc.oid = p.partrelid
join pg_namespace pn on pn.oid = pc.relnamespace
cross join lateral pg_partition_tree(pc.oid) t
left join pg_stat_user_tables st on st.relid = t.relid
where t.isleaf and pc.relispartition = false
group by 1, 2
"""

REGCLASS = "select to_regclass(%s) is not null"
