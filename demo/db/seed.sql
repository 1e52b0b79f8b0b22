-- Demo data at scale :scale (1.0 = 100k participants, 12k events, 300k registrations,
-- ~450k gate log rows). Run by demo/db/seed.py with the scale substituted; idempotent
-- through platform.seed_info.
select platform.ensure_partitions();

insert into platform.participants (email, full_name, country, created_at)
select 'user' || g || '@' || (array['example.com','mail.test','corp.test','uni.test'])[1 + g % 4],
       'Participant ' || g,
       (array['KR','SG','JP','US','DE','FR','VN','TH'])[1 + g % 8],
       now() - make_interval(days => (g % 1500))
from generate_series(1, (100000 * :scale)::int) g;

-- events: spread over 40 months back and 2 ahead (old ones are archiving candidates)
insert into platform.events (id, name, venue, region, capacity, starts_at, created_at)
select g, 'Event ' || g,
       'Venue ' || (g % 300),
       (array['seoul','singapore','tokyo'])[1 + g % 3],
       100 + (g % 50) * 100,
       s.starts_at,
       s.starts_at - make_interval(days => 30 + (g % 90))
from generate_series(1, (12000 * :scale)::int) g
cross join lateral (select date_trunc('month', now()) - interval '40 months'
                           + ((g::float / (12000 * :scale)) * interval '41 months') + make_interval(hours => g % 24) as starts_at) s;

insert into platform.registrations (event_id, participant_id, status, created_at)
select 1 + (g::bigint * 7919) % (12000 * :scale)::int,
       1 + (g::bigint * 104729) % (100000 * :scale)::int,
       (array['registered','registered','registered','checked_in','checked_in','cancelled','waitlisted'])[1 + g % 7],
       now() - make_interval(mins => (g % 500000))
from generate_series(1, (300000 * :scale)::int) g;

-- gate logs: the last 14 days (daily partitions) ...
insert into platform.gate_logs (gate, event_id, participant_id, direction, logged_at)
select 'gate-' || (g % 40), 1 + g % (12000 * :scale)::int, 1 + (g::bigint * 31) % (100000 * :scale)::int,
       (array['in','out','in','denied'])[1 + g % 4],
       date_trunc('day', now()) - interval '14 days' + (g::float / (440000 * :scale)) * (now() - (date_trunc('day', now()) - interval '14 days'))
from generate_series(1, (440000 * :scale)::int) g;
-- ... and some 7-month-old rows stuck in the default partition (archiving candidates)
insert into platform.gate_logs (gate, event_id, participant_id, direction, logged_at)
select 'gate-' || (g % 40), 1 + g % 1000, g, 'in', now() - interval '210 days' - make_interval(mins => g)
from generate_series(1, (5000 * :scale)::int) g;

analyze platform.participants;
analyze platform.events;
analyze platform.registrations;
analyze platform.gate_logs;
