import azure.functions as func
from orchestrator.bootstrap import set_runtime
from tests.service.conftest import make_runtime, policy_yaml, RecordingTrainingBackend  # noqa
from triggers.http_api import retrain, rollback

def call(fn, body, **kw):
    req = func.HttpRequest("POST", "http://localhost/api/retrain", body=body, **kw)
    return fn._function.get_user_function()(req)

def test_probe(make_runtime):
    rt = make_runtime({"churn.v2": policy_yaml("churn.v2").replace("churn.v2-ep", "churnv2-ep"), "churn": policy_yaml("churn")})
    rt.__dict__["training"] = RecordingTrainingBackend()
    set_runtime(rt)
    try:
        for body in [b'{"model": "churn", "reason": "\\ud800"}', b'{"model": "churn", "data_uri": "\\udfff"}',
                     b'{"model":"churn.v2"}']:
            try:
                r = call(retrain, body, headers={"x-requested-by": "\udc80"})
                print(r.status_code, r.get_body()[:300])
            except Exception as e:
                print("EXC", type(e).__name__, str(e)[:300])
    finally:
        set_runtime(None)
