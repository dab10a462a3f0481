-- One ES256 bearer token on every request (scripts/bench.sh, the jwt_* scenarios): signed once
-- by a key pair made for the benchmark, whose private half was discarded; the public half is
-- scripts/wrk/jwt-jwks.json. It expires in 2100.
wrk.headers["Authorization"] = "Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImJlbmNoLWVjIn0.eyJzdWIiOiJiZW5jaCIsImlzcyI6Imh0dHBzOi8vaWRwLmJlbmNoIiwiYXVkIjoiYXBpIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3NjQ3MjAwMDB9.khIkadpnR-i0L75Wr_lxpnslDkYkXzzWikQEJkouP8TYp7WqIAWPHlLGYrX8GVfYvEd_TSdCoOqUA--7RpK9rw"
