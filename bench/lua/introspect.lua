-- POST /oauth/introspect of one token, client_secret_basic (RFC 7662).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "POST"
wrk.path = "/oauth/introspect"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
header_from_env("Authorization", "BENCH_AUTHORIZATION")
