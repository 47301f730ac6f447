# The synthetic task's classes, shared by make-synthetic-dataset.sh and
# make-synthetic-demo.sh: label → videotestsrc pattern and the properties that make it move.
# shellcheck disable=SC2034 # read by the scripts that source this file
synthetic_classes=(
    "bouncing ball|pattern=ball motion=wavy"
    "checkerboard|pattern=checkers-8"
    "zone plate|pattern=zone-plate kt2=0 kx2=20 ky2=20"
    "colour bars|pattern=smpte"
    "noise|pattern=snow"
    "spokes|pattern=spokes"
    "moving bar|pattern=bar"
    "colour spectrum|pattern=colors"
)
