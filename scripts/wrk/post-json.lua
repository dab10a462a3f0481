-- A benign API request: query arguments and a small JSON body.
wrk.method = "POST"
wrk.path = "/api/items?q=running+shoes&page=2&sort=price&lang=en"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Cookie"] = "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark"
wrk.body = '{"name":"Jane O\'Brien","email":"jane@example.com","comment":"Great product, works as expected!","qty":2,"tags":["gift","sale"]}'
