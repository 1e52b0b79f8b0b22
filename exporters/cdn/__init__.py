"""The CDN and cache exporter (`opsstack exporter cdn`): Cloudflare GraphQL Analytics (closed,
offset windows exported as gauges), Varnish (`varnishstat -j`), Redis (INFO) and the cache policy
per content class. Metric names and ownership: docs/metrics.md, "CDN and cache"."""
