-- GET /index.html as one of 10,000 API clients (X-Api-Key), picked at random per request.
math.randomseed(42)
request = function()
  return wrk.format("GET", "/index.html", { ["X-Api-Key"] = "client-" .. math.random(10000) })
end
