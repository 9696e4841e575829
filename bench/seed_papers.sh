#!/usr/bin/env bash
# The seed papers' experiments, one command: `bash bench/seed_papers.sh [NAME ...]` (default: all, in the order
# below). Each is an `ablate` or `sweep` run on the bundled MOSI or the shared MVSA set, sized to at most 20 minutes
# on 2 cores (fewer folds or epochs than the shipped defaults where a full run would not fit; each line says so).
# Every run starts from the space's `start:` configuration (the paper's setting where the paper gives one): the
# runs go to their own tracking store, so a study of yours in ./mlruns never changes which configuration is ablated.
# Per experiment, bench/results/seed_papers/NAME.md holds the command, its wall time and the table; NAME.png the
# sweep's plot; NAME.log the whole output. `python bench/seed_paper_figures.py` then draws the figures (000 Fig. 7,
# 001 Fig. 1/6a) from the fold runs in the same store.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
MVSA=${MVSA_DATA:-../shared/data/mvsa_ecnu}
OUT=bench/results/seed_papers
mkdir -p "$OUT" mlruns
TRACKING=${SEED_PAPERS_TRACKING:-sqlite:///$PWD/mlruns/seed_papers.db}

declare -A CMD=(
  # 001 Table 3: B-fusion added to existing late-fusion models (5 folds, 12 epochs, patience 3)
  [001_table3_lf_dnn]="ablate mosi --arch lf_dnn --variants bfusion_on"
  [001_table3_lf_lstm]="ablate mosi --arch lf_lstm --variants bfusion_on"
  # awf's default study (6 trials x 5 folds; its first trial is the paper's MOSI setting): the paper's SGD at lr 1e-4
  # barely moves in 12 epochs on frozen MiniLM features, so the awf rows below use the study's best configuration
  [001_awf_study]="tune mosi --arch awf"
  # 001 Tables 8-10: awf without B-fusion / A-fusion / A-fusion frozen, and every modality subset (5 folds, 12 epochs)
  [001_tables8_10_awf]="ablate mosi --arch awf"
  # 001 Table 7: SGD, Adam, AdamW at the study's best configuration (5 folds, 12 epochs)
  [001_table7_optimizer]="sweep mosi --config-run @awf_study --param optimizer --values sgd,adam,adamw"
  # 001 Fig. 5 (our reading: sensitivity to B-fusion's own learning rate), 5 folds, 12 epochs
  [001_fig5_omega_lr]="sweep mosi --config-run @awf_study --param omega_lr --values 0.005,0.02,0.05,0.1"
  # 000 Table 5 (the paper's is on MOSEI) and Fig. 7: mtl's nine declared variants; 2 folds, at most 6 epochs
  [000_table5_mtl]="ablate mosi --arch mtl --folds 2 --epochs 6 --variants no_polarity,no_intensity,no_aux_tasks,no_cross_shared,no_unimodal_shared,no_cnn,no_bigru,no_unimodal_attention,no_cross_attention"
  # CENet's vocabulary size (acoustic and visual k-means clusters; the authors' code uses 16); 2 folds, 2 epochs
  [cenet_vocab_size]="sweep mosi --arch cenet --param vocab_size --values 4,16,64 --folds 2 --epochs 2"
  # 004 Table 2: heads x FFN width at the paper's setting (pretrained, bicross); 2 folds, 2 epochs
  [004_table2_heads_ffn]="sweep mvsa --data $MVSA --param heads --values 4,8 --param2 ffn --values2 512,1024 --folds 2 --epochs 2"
  # 004 Table 4: image + text, image only, text only at the paper's setting; 2 folds, 2 epochs
  [004_table4_modalities]="ablate mvsa --data $MVSA --folds 2 --epochs 2"
)
ORDER=(001_table3_lf_dnn 001_table3_lf_lstm 001_awf_study 001_tables8_10_awf 001_table7_optimizer 001_fig5_omega_lr
  000_table5_mtl cenet_vocab_size 004_table2_heads_ffn 004_table4_modalities)

names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${ORDER[@]}")
for name in "${names[@]}"; do
  [ -n "${CMD[$name]:-}" ] || { echo "error: unknown experiment $name. Fix: use one of ${ORDER[*]}" >&2; exit 2; }
done
for name in "${names[@]}"; do
  args=${CMD[$name]}
  if [[ $args == *@awf_study* ]]; then  # the awf study's run id, from its own output
    study=$(grep -o 'MLflow: study run [0-9a-f]*' "$OUT/001_awf_study.log" 2>/dev/null | awk '{print $4}')
    [ -n "$study" ] || { echo "error: $name needs 001_awf_study first. Fix: bash $0 001_awf_study $name" >&2; exit 2; }
    args=${args//@awf_study/$study}
  fi
  extra=(--tracking-uri "$TRACKING")
  [[ $args == tune* ]] || extra+=(--format md --out "$OUT/$name.table.md")
  [[ $args == sweep* ]] && extra+=(--plot "$OUT/$name.png")
  echo "== $name: python -m ray_msa.$args"
  start=$(date +%s)
  # shellcheck disable=SC2086  # the command line is split on purpose
  python -m ray_msa.$args "${extra[@]}" > "$OUT/$name.log" 2>&1 || { echo "!! $name failed: see $OUT/$name.log" >&2; exit 1; }
  wall=$(( $(date +%s) - start ))
  {
    echo "\`python -m ray_msa.$args\` ($(printf '%d min %02d s' $((wall / 60)) $((wall % 60))) on $(nproc) cores," \
      "commit $(git rev-parse --short HEAD))"
    echo
    if [[ $args == tune* ]]; then  # the study's closing table
      echo '```'
      sed -n '/ trials x .* folds in /,/^best configuration/p' "$OUT/$name.log"
      echo '```'
    else
      cat "$OUT/$name.table.md"
    fi
  } > "$OUT/$name.md"
  rm -f "$OUT/$name.table.md"
  echo "   $((wall / 60)) min $((wall % 60)) s"
done
