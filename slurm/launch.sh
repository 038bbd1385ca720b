#!/usr/bin/env bash
#SBATCH --job-name=gicl
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=USR1@90
#SBATCH --output=slurm-%x-%j.out
#SBATCH --open-mode=append
#
# Train a gicl recipe under SLURM: one task per GPU, Lightning's SLURM environment, and
# requeue on preemption (USR1 90 s before the time limit: Lightning saves a checkpoint and
# requeues; the rerun resumes the same run dir from last.ckpt).
#
#   sbatch --nodes 2 --ntasks-per-node 8 --gres gpu:8 slurm/launch.sh --recipe progic \
#          --run-dir /shared/runs/progic/a --set trainer.devices=8 --set trainer.num_nodes=2
#
# Every argument goes to `python -m gicl fit`. #SBATCH lines are defaults: sbatch options
# on the command line override them. GICL_PYTHON picks the interpreter (default: the
# repo's .venv, else python3).
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^#SBATCH/  #SBATCH/' -e 's/^# \{0,1\}//'
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
esac
if [[ -z "${SLURM_JOB_ID:-}" ]]; then
  echo "slurm/launch.sh: not inside a SLURM job - submit it with 'sbatch slurm/launch.sh --recipe NAME ...' (see --help)" >&2
  exit 2
fi

repo="${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
cd "$repo"
python="${GICL_PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
echo "gicl: job ${SLURM_JOB_ID} restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST:-?}: fit $*"
# srun starts one task per GPU; Lightning reads SLURM_PROCID/SLURM_NTASKS for ranks.
exec srun --kill-on-bad-exit=1 "$python" -m gicl fit "$@"
