#!/usr/bin/env bash
# BERT-base (768 x 12, vocab 30522), seq 128, bf16 MLM pretraining on ONE GPU: our pipeline vs the
# Hugging Face run_mlm_no_trainer recipe, tokens/s and MFU against the GPU's measured bf16 matmul peak.
#
#   bench/gpu.sh              # on a CUDA machine, from anywhere; ~5-10 min (data prep, compile, 7 rows)
#   bench/gpu.sh --dry-run    # on CPU: syntax, imports and a 1-step tiny run of every row kind
#
# Rows: hf (the example at its best precision on this GPU: fp32 and bf16 autocast are tried first),
# hf_fp32, then our ablation from the recipe's settings (dense loss, torch AdamW, dropout 0.1) in the
# precision train.precision=auto picks (bf16 on a GPU with native bf16): sparse head, fused AdamW,
# dropout 0, attention auto (SDPA on CUDA), torch.compile (default, max-autotune-no-cudagraphs), and
# the document mask.  Results: bench/results/pretrain_base_cuda.json (with the GPU model) plus a
# torch.profiler table of our best row.
# Environment: PIPELINE_DATA (folder holding wikitext-2/; a synthetic corpus is used if absent),
# PIPELINE_BENCH_CACHE (tokenizer/shard cache, default /tmp/pipeline-bench), BATCH (default 128).
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_ROWS=hf,hf_fp32,loop,sparse,fused,nodrop,attn,compile,compile_max,doc_mask

if [[ "${1:-}" == "--dry-run" ]]; then
    bash -n bench/gpu.sh
    python -m compileall -q bench pipeline
    # every GPU row (compile included) plus the other row kinds, one step each
    exec python -m bench.pretrain_throughput --size tiny --device cpu --calibration-steps 1 \
        --configs "$GPU_ROWS,hf_bf16,hf_nodrop,attn_fp32,compile_static" --batch-size 2 --warmup 0 --steps 1 --rounds 1 \
        --name gpu_dry_run
fi

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA device visible to torch (use --dry-run to check the script on CPU)" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -m bench.pretrain_throughput --size base --device cuda --batch-size "${BATCH:-128}" \
    --configs "$GPU_ROWS" --warmup 3 --steps 10 --rounds 1 --profile \
    --name pretrain_base_cuda
