import os
import socket

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank, cfg, run_dir, out_dir, port):
    import partsearch.model.model as model_module
    from partsearch.train.engine import train

    torch.set_num_threads(1)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    built = []
    real_build = model_module.build_model

    def capture(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    model_module.build_model = capture
    train(cfg, run_dir)
    # Parameters only: BatchNorm running statistics are per rank; DDP broadcasts rank 0's at each
    # forward, and rank 0's are the ones saved.
    params = {name: p.detach() for name, p in built[0].named_parameters()}
    torch.save(params, os.path.join(out_dir, f"rank{rank}.pt"))


def test_two_gloo_processes_keep_identical_parameters(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.max_steps=2", "data.batch_size=4")
    mp.spawn(_worker, args=(cfg, str(tmp_path / "run"), str(tmp_path), _free_port()), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["step"] == 2
    assert all(torch.equal(saved["model"][k], a[k]) for k in a)
