import time, os, sys, json
os.environ.setdefault("RAY_AUTH_MODE","disabled")
import ray
ray.init(address="local", num_cpus=2, include_dashboard=False)
from harness.sweep.launch import shorten_cleaner_stop

def tf(config):
    t_entry = time.time()
    import torch, torch.distributed
    t_torch = time.time()
    import deepspeed
    t_ds = time.time()
    import harness.run.trainer
    t_h = time.time()
    import ray.train
    if ray.train.get_context().get_world_rank()==0:
        json.dump([t_entry, t_torch, t_ds, t_h, time.time()], open(config["f"],"w"))

@ray.remote(num_cpus=0)
def fit(i):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.backend import BackendConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
    shorten_cleaner_stop()
    t0 = time.time()
    tr = DataParallelTrainer(tf, train_loop_config={"f": f"/tmp/prof/t{i}.json"}, backend_config=BackendConfig(), scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU":1}),
        run_config=RunConfig(name=f"p{i}", storage_path=f"/tmp/prof/st"))
    res = tr.fit()
    t_end = time.time()
    ts = json.load(open(f"/tmp/prof/t{i}.json"))
    return {"to_entry": ts[0]-t0, "torch": ts[1]-ts[0], "deepspeed": ts[2]-ts[1], "harness": ts[3]-ts[2], "after_report_to_end": t_end-ts[4]}
for i in range(3):
    t=time.time(); r=ray.get(fit.remote(i)); print({k: round(v,2) for k,v in r.items()}, "total", round(time.time()-t,2), flush=True)
