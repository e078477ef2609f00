-- POST /oauth/token, client_secret_basic, form body (RFC 6749 §4.4).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "POST"
wrk.path = "/oauth/token"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
header_from_env("Authorization", "BENCH_AUTHORIZATION")
