-- GET $BENCH_PATH: the JWKS, the metadata, or the floor app's endpoint.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "GET"
wrk.path = os.getenv("BENCH_PATH")
