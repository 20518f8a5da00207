#!/usr/bin/env bash
# The CUDA paths in one short run on a machine with a GPU: smoke test, bf16 and fp16
# (GradScaler + T5 guard) training with generation on the demo data, validation, then the
# throughput benchmark with the default and a SONAR-scale encoder. Results land in
# ${OUT:-gpu_check}/, the MFU of every run in mfu.txt. Not yet run (no GPU lent so far); an
# estimated 10 minutes on one GPU.
set -euo pipefail
out=${OUT:-gpu_check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python test_perceiver_architecture.py --device cuda
for precision in bf16 fp16; do
    python train_sonar_with_t5.py --demo --device cuda --precision "$precision" --epochs 3 \
        --batch_size 64 --num_workers 2 --output_dir "$out/demo_$precision" --overwrite
done
python validate_perceiver_model.py --checkpoint "$out/demo_bf16/best_model.pt" --device cuda \
    --features "$out/demo_bf16/demo_data/features/test" \
    --manifest "$out/demo_bf16/demo_data/manifests/test.tsv" --output "$out/validation"
python -m benchmarks.run --device cuda --num_train 1024 --num_val 256 --num_generate 1000 \
    --batch_size 32 --output "$out/benchmark.json"
# the same with an encoder of the SONAR ASL encoder's shape (1024 x 24)
python -m benchmarks.run --device cuda --num_train 1024 --num_val 256 --num_generate 1000 \
    --batch_size 32 --encoder_d_model 1024 --encoder_layers 24 --output "$out/benchmark_sonar_scale.json"
# memory per GPU, DDP vs --sharding fsdp, the 752M encoder unfrozen (two processes: two GPUs)
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
    python -m benchmarks.sharded_memory --gradient_checkpointing --output "$out/sharded_memory.json"
fi
# MFU against the GPU's datasheet peak (the runs' own measure): each demo epoch, and each
# training mode of the two benchmarks, into mfu.txt
python - "$out" <<'PY' | tee "$out/mfu.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for history in sorted(out.glob("demo_*/training_history.json")):
    print(history.parent.name, "MFU by epoch:",
          " ".join(f"{r['mfu']:.1%}" for r in json.loads(history.read_text())))
for bench in sorted(out.glob("benchmark*.json")):
    result = json.loads(bench.read_text())
    print(bench.name, f"peak {result['peak_gflops']:,.0f} GFLOP/s ({result['peak_source']}):",
          " ".join(f"{k[4:]} {v:.1%}" for k, v in result.items() if k.startswith("mfu_")))
PY
