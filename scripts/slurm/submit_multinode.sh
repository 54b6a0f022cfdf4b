#!/bin/bash
# Pretrain on several SLURM nodes: one launcher per node (srun starts them), which starts the node's processes; the
# first node of the allocation is the rendezvous host (c10d). `python -m hfssl.launch` is `accelerate launch` with
# the machine settings checked and the wait for the head node bounded (--connect_timeout, default 120 s).
#   sbatch scripts/slurm/submit_multinode.sh                   # edit the #SBATCH lines and ARGS first
#SBATCH --job-name=hfssl-pretrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one launcher per node
#SBATCH --gres=gpu:4                 # drop on CPU-only nodes (and set PROCESSES_PER_NODE)
#SBATCH --cpus-per-task=32
#SBATCH --time=04:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

PROCESSES_PER_NODE=${PROCESSES_PER_NODE:-4}        # GPUs per node (or CPU processes per node)
ARGS=${ARGS:-"--objective causal_lm --output_dir outputs/gpt-multinode"}
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk '{print $1}')

# SLURM_NODEID differs on each node: srun expands it there, not here (hence the single quotes)
srun bash -c 'python -m hfssl.launch \
    --multi_gpu \
    --num_machines "$SLURM_NNODES" \
    --num_processes $((SLURM_NNODES * '"$PROCESSES_PER_NODE"')) \
    --machine_rank "$SLURM_NODEID" \
    --main_process_ip '"$head_ip"' \
    --main_process_port 29500 \
    --rdzv_backend c10d \
    scripts/pretrain.py '"$ARGS"
