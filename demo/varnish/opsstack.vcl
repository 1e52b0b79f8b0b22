vcl 4.1;
# The demo's Varnish in front of a service (demo/varnish_conf.py renders the backend in).
# Content classes and TTLs (exporters.cdn.classes): static 7d, api 5m, dynamic 1m, chosen by the
# origin's X-Cache-Class header, else by the path (/static/, /api/). Objects are tagged for
# invalidation by the origin's xkey header (space separated) or Cache-Tag (comma separated, the
# header Cloudflare purges by): PURGE with `xkey-purge: <tag>` removes that tag's objects at once
# (vmod xkey); BAN with X-Ban-Tag or X-Ban-Prefix adds a ban. Both only from loopback.

import std;
import xkey;

backend default {
    .host = "__ORIGIN_HOST__";
    .port = "__ORIGIN_PORT__";
}

acl invalidators {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ invalidators) {
            return (synth(403, "Forbidden"));
        }
        if (req.http.xkey-purge) {
            set req.http.x-purged = xkey.purge(req.http.xkey-purge);
            return (synth(200, "Purged " + req.http.x-purged + " objects"));
        }
        return (purge);
    }
    if (req.method == "BAN") {
        if (client.ip !~ invalidators) {
            return (synth(403, "Forbidden"));
        }
        if (req.http.X-Ban-Tag) {
            if (std.ban({"obj.http.x-cache-tags ~ (^|\s)"} + req.http.X-Ban-Tag + {"(\s|$)"})) {
                return (synth(200, "Ban added"));
            }
            return (synth(400, "Ban refused: " + std.ban_error()));
        }
        if (req.http.X-Ban-Prefix) {
            if (std.ban("obj.http.x-url ~ ^" + req.http.X-Ban-Prefix)) {
                return (synth(200, "Ban added"));
            }
            return (synth(400, "Ban refused: " + std.ban_error()));
        }
        return (synth(400, "BAN needs X-Ban-Tag or X-Ban-Prefix"));
    }
}

sub vcl_backend_response {
    set beresp.http.x-url = bereq.url;
    if (!beresp.http.xkey && beresp.http.Cache-Tag) {
        set beresp.http.xkey = regsuball(beresp.http.Cache-Tag, "\s*,\s*", " ");
    }
    set beresp.http.x-cache-tags = beresp.http.xkey;
    if (beresp.http.X-Cache-Class == "none") {
        # the origin asks for no caching (the demo's cache-miss-storm): a short hit-for-miss
        set beresp.uncacheable = true;
        set beresp.ttl = 1s;
        return (deliver);
    }
    if (beresp.http.X-Cache-Class == "static" || (!beresp.http.X-Cache-Class && bereq.url ~ "^/static/")) {
        set beresp.http.X-Cache-Class = "static";
        set beresp.ttl = 7d;
    } elsif (beresp.http.X-Cache-Class == "api" || (!beresp.http.X-Cache-Class && bereq.url ~ "^/api/")) {
        set beresp.http.X-Cache-Class = "api";
        set beresp.ttl = 5m;
    } else {
        set beresp.http.X-Cache-Class = "dynamic";
        set beresp.ttl = 1m;
    }
    set beresp.grace = 1h;
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    set resp.http.X-Cache-TTL = obj.ttl;
    unset resp.http.x-url;
    unset resp.http.x-cache-tags;
}
