#!/usr/bin/env bash
# Generates the robustness set: originals, their edited copies (one file per family and
# original) and unrelated negatives, with the ffmpeg CLI only. Deterministic: the same
# ffmpeg gives the same files (fixed seeds, single-threaded x264).
#
#   scripts/robustness/gen.sh OUT_DIR [full|small]
#
# OUT_DIR/originals/<id>.mp4, OUT_DIR/copies/<id>__<family>.mp4, OUT_DIR/negatives/*.mp4,
# OUT_DIR/negframes/*.mp4 (long low-resolution negatives for the >=100k-frame count; full only).
# "small" (CI): 2 originals, a few families, 3 negatives.
set -euo pipefail
OUT=${1:?usage: gen.sh OUT_DIR [full|small]}
SET=${2:-full}
HERE=$(cd "$(dirname "$0")" && pwd)
CONF=${CONFORMANCE:-$HERE/../../../shared/conformance}
VIDS=$CONF/vpdq/videos
IMGS=$CONF/pdq/images
FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf
mkdir -p "$OUT"/originals "$OUT"/copies "$OUT"/negatives
printf 'BREAKING the footage they tried to hide' >"$OUT/caption.txt"
ENC=(-c:v libx264 -preset veryfast -crf 20 -pix_fmt yuv420p -threads 1 -x264-params threads=1 -an -y -loglevel error)
ff() { ffmpeg -nostdin -hide_banner "$@"; }

# ---- originals (about 10 s, up to 640 px) ----
orig() { # id, then ffmpeg input+filter args
  local id=$1; shift
  [ -s "$OUT/originals/$id.mp4" ] || ff "$@" "${ENC[@]}" "$OUT/originals/$id.mp4"
}
# Real recordings (the chair has bars of its own; pattern is portrait).
orig chair -i "$VIDS/chair-orig-22-sd-bar.mp4" -t 10 -vf "scale=-2:480"
orig doorknob -i "$VIDS/doorknob-hd-no-bar.mp4" -vf "scale=640:-2"
if [ "$SET" = full ]; then
orig pattern -i "$VIDS/pattern-longer-no-bar.mp4" -vf "scale=-2:640"
# Synthetic: a camera pan over a photo, a mandelbrot zoom, moving shapes over gradients.
orig pan -loop 1 -framerate 25 -i "$IMGS/labelme-q0746.jpg" -t 10 \
  -vf "scale=1600:-2,crop=640:360:x='min(t*80\,iw-640)':y='(ih-360)/2+20*sin(t)'"
orig mandel -f lavfi -i "mandelbrot=size=640x360:rate=25:start_scale=2.5:end_scale=0.05:end_pts=300" -t 10
orig shapes -f lavfi -i "gradients=size=640x360:rate=25:seed=7:speed=0.02:n=4" -t 10 \
  -vf "drawbox=x='40+t*40':y='60+40*sin(t*1.3)':w=160:h=120:color=0x1060e0:t=fill,drawbox=x='420-t*25':y='200-30*cos(t)':w=120:h=120:color=0xf0d020:t=fill,drawbox=x='200+60*sin(t*0.7)':y=30:w=80:h=260:color=0x202020:t=fill"
fi

# ---- copies ----
BG="cellauto=size=640x360:rate=25:rule=110:seed=3"   # unrelated moving background
LOGO="drawbox=x=iw*0.68:y=ih*0.03:w=iw*0.30:h=ih*0.33:color=0xc02020:t=fill,drawtext=fontfile=$FONT:text=NEWS24:x=w*0.71:y=h*0.15:fontsize=h*0.08:fontcolor=white"
# A square logo of 10 % of the frame's area at the bottom left, 3 % from the edges (in a
# 16:9 frame: 24 % of the width, 42 % of the height).
LOGO2="drawbox=x=iw*0.03:y=ih*0.97-sqrt(0.1*iw*ih):w=sqrt(0.1*iw*ih):h=sqrt(0.1*iw*ih):color=0x2060c0:t=fill,drawtext=fontfile=$FONT:text=TV:x=w*0.06:y=h*0.75:fontsize=h*0.12:fontcolor=white"
family() { # id family -> ffmpeg args producing the copy from $in
  local in=$1 fam=$2
  case $fam in
    reencode)   echo "-i $in -b:v 120k -maxrate 150k -bufsize 300k" ;;
    half)       echo "-i $in -vf scale=trunc(iw/4)*2:trunc(ih/4)*2" ;;
    color)      echo "-i $in -vf eq=contrast=1.3:saturation=1.6:brightness=0.06,hue=h=25" ;;
    grey)       echo "-i $in -vf format=gray" ;;
    fps15)      echo "-i $in -vf fps=15" ;;
    speedup)    echo "-i $in -vf setpts=PTS/1.1" ;;
    slowdown)   echo "-i $in -vf setpts=PTS*1.1" ;;
    clip)       echo "MIDCLIP" ;;
    crop5)      echo "-i $in -vf crop=trunc(iw*0.9/2)*2:trunc(ih*0.9/2)*2" ;;
    crop10)     echo "-i $in -vf crop=trunc(iw*0.8/2)*2:trunc(ih*0.8/2)*2" ;;
    crop20)     echo "-i $in -vf crop=trunc(iw*0.6/2)*2:trunc(ih*0.6/2)*2" ;;
    offcrop)    echo "-i $in -vf crop=trunc(iw*0.85/2)*2:trunc(ih*0.85/2)*2:0:0" ;;
    hflip)      echo "-i $in -vf hflip" ;;
    rot90)      echo "-i $in -vf transpose=1" ;;
    logo)       echo "-i $in -vf $LOGO" ;;
    logo2)      echo "-i $in -vf $LOGO2" ;;
    pillarbox)  echo "-i $in -vf pad=trunc(iw*4/3/2)*2:ih:(ow-iw)/2:0" ;;
    letterbox)  echo "-i $in -vf pad=iw:trunc(ih*4/3/2)*2:0:(oh-ih)/2" ;;
    caption)    echo "-i $in -vf drawbox=x=0:y=ih*0.86:w=iw:h=ih*0.14:color=black:t=fill,drawtext=fontfile=$FONT:textfile=$OUT/caption.txt:x=w*0.03:y=h*0.895:fontsize=h*0.055:fontcolor=white" ;;
    pip)        echo "PIP 0.6 center" ;;
    inset)      echo "PIP 0.4 corner" ;;
    combo)      echo "-i $in -vf hflip,crop=trunc(iw*0.9/2)*2:trunc(ih*0.9/2)*2,$LOGO" ;;
    *) echo "unknown family $fam" >&2; return 1 ;;
  esac
}
if [ "$SET" = full ]; then
  FAMILIES="reencode half color grey fps15 speedup slowdown clip crop5 crop10 crop20 offcrop hflip rot90 logo logo2 pillarbox letterbox caption pip inset combo"
else
  FAMILIES="reencode hflip crop5 pillarbox logo offcrop"
fi
for o in "$OUT"/originals/*.mp4; do
  id=$(basename "$o" .mp4)
  dur=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$o")
  for fam in $FAMILIES; do
    out="$OUT/copies/${id}__${fam}.mp4"
    [ -s "$out" ] && continue
    spec=$(family "$o" "$fam")
    case $spec in
      MIDCLIP)
        len=$(awk -v d="$dur" 'BEGIN{print (d>=10)?5:d/2}')
        start=$(awk -v d="$dur" -v l="$len" 'BEGIN{print (d-l)/2}')
        ff -ss "$start" -i "$o" -t "$len" "${ENC[@]}" "$out" ;;
      PIP*)
        read -r _ scale where <<<"$spec"
        if [ "$where" = center ]; then pos="(W-w)/2:(H-h)/2"; else pos="W-w-16:H-h-16"; fi
        # The original at $scale of its size over unrelated moving content of its size.
        wh=$(ffprobe -v error -select_streams v -show_entries stream=width,height -of csv=p=0:s=x "$o")
        ff -i "$o" -f lavfi -i "$BG" -filter_complex \
          "[1:v]format=yuv420p,scale=$wh,boxblur=2[bg];[0:v]scale=trunc(iw*$scale/2)*2:trunc(ih*$scale/2)*2[fg];[bg][fg]overlay=$pos:shortest=1" \
          -t "$dur" "${ENC[@]}" "$out" ;;
      *)
        # shellcheck disable=SC2086
        ff $spec "${ENC[@]}" "$out" ;;
    esac
  done
done

# ---- unrelated negatives (hard ones included), 10 s each ----
neg() { local id=$1; shift; [ -s "$OUT/negatives/$id.mp4" ] || ff "$@" -t 10 "${ENC[@]}" "$OUT/negatives/$id.mp4"; }
neg black -f lavfi -i "color=black:size=640x360:rate=25"
neg nearblack -f lavfi -i "color=0x0a0a0c:size=640x360:rate=25" -vf "noise=alls=4:allf=t+u:all_seed=5"
neg slides -f lavfi -i "color=white:size=640x360:rate=25" -vf "drawtext=fontfile=$FONT:text='Quarterly results %{eif\:floor(t/2)+1\:d}':x=40:y=40:fontsize=36:fontcolor=black,drawtext=fontfile=$FONT:text='- revenue up\n- costs down\n- outlook stable':x=60:y=120:fontsize=28:fontcolor=0x303030"
if [ "$SET" = full ]; then
neg testsrc2 -f lavfi -i "testsrc2=size=640x360:rate=25"
neg smpte -f lavfi -i "smptehdbars=size=640x360:rate=25"
neg colorchart -f lavfi -i "colorchart=rate=25" -vf "scale=640:360"
neg mandel2 -f lavfi -i "mandelbrot=size=640x360:rate=25:start_x=-0.75:start_y=0.1:start_scale=1.5:end_scale=0.2:end_pts=300:inner=period"
neg gradients2 -f lavfi -i "gradients=size=640x360:rate=25:seed=99:speed=0.02:n=4" -vf "drawbox=x='500-t*40':y='100+40*sin(t)':w=140:h=120:color=0xe06010:t=fill"
neg life -f lavfi -i "life=size=640x360:rate=25:seed=11:mold=10:ratio=0.2:death_color=#004020:life_color=#f0f0a0"
neg cellauto2 -f lavfi -i "cellauto=size=640x360:rate=25:rule=30:seed=9"
neg sierpinski -f lavfi -i "sierpinski=size=640x360:rate=25:seed=4"
neg photos -framerate 1 -pattern_type glob -i "$IMGS/labelme-*.jpg" -vf "scale=640:360:force_original_aspect_ratio=decrease,pad=640:360:(ow-iw)/2:(oh-ih)/2,fps=25"
neg photos2 -framerate 1 -pattern_type glob -i "$IMGS/bridge-mods-*.jpg" -vf "scale=640:360:force_original_aspect_ratio=decrease,pad=640:360:(ow-iw)/2:(oh-ih)/2,fps=25"
fi

# ---- long low-resolution negatives for the >=100k-frame false-match count (full only) ----
if [ "$SET" = full ]; then
  mkdir -p "$OUT"/negframes
  long() { local id=$1; shift; [ -s "$OUT/negframes/$id.mp4" ] || ff "$@" -t 400 "${ENC[@]}" "$OUT/negframes/$id.mp4"; }
  long mandel -f lavfi -i "mandelbrot=size=320x240:rate=25:start_x=-1.25:start_y=0.02:start_scale=2:end_scale=0.001:end_pts=10000"
  long mandel3 -f lavfi -i "mandelbrot=size=320x240:rate=25:start_x=0.28:start_y=0.008:start_scale=1:end_scale=0.0005:end_pts=10000:inner=convergence"
  long life -f lavfi -i "life=size=320x240:rate=25:seed=21:mold=20:ratio=0.3"
  long life2 -f lavfi -i "life=size=320x240:rate=25:seed=77:rule=S14/B34:ratio=0.4"
  long cellauto -f lavfi -i "cellauto=size=320x240:rate=25:rule=90:seed=2:random_fill_ratio=0.5"
  long gradients -f lavfi -i "gradients=size=320x240:rate=25:seed=5:speed=0.005:n=6"
  long testsrc2 -f lavfi -i "testsrc2=size=320x240:rate=25"
  long nearblack -f lavfi -i "color=0x080808:size=320x240:rate=25" -vf "noise=alls=6:allf=t+u:all_seed=3"
  long sierpinski -f lavfi -i "sierpinski=size=320x240:rate=25:seed=8:jump=50"
  long slides -f lavfi -i "color=0xf8f8f0:size=320x240:rate=25" -vf "drawtext=fontfile=$FONT:text='Slide %{eif\:floor(t/3)\:d}  item %{eif\:mod(floor(t*7),97)\:d}':x=10+mod(floor(t/3)*37\,120):y=20+mod(floor(t/3)*53\,150):fontsize=22:fontcolor=black"
  long photos -loop 1 -framerate 25 -i "$IMGS/labelme-q0291.jpg" -vf "scale=1200:-2,crop=320:240:x='mod(t*13\,iw-320)':y='mod(t*7\,ih-240)'"
fi
echo "set in $OUT: $(ls "$OUT"/originals | wc -l) originals, $(ls "$OUT"/copies | wc -l) copies, $(ls "$OUT"/negatives | wc -l) negatives"
