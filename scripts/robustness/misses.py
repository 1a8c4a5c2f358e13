#!/usr/bin/env python3
"""Why two families of the full set miss (issue 16): hash distances, at one frame per
original (2 s in), between what the monitor could match and what is banked.

  scripts/robustness/misses.py SET_DIR [FIREBREAK] [WORK_DIR]

inset: the inset's exact rectangle (40 %, 16 px from the corner, as gen.sh places it)
against the original's whole-frame hash, and the fixed `br40` corner view; combo (flip +
5 % crop + logo): the copy mirrored back against the banked centre 90 % view, and the same
with the logo's region masked on both. Distances above 31 do not match.
"""
import os
import subprocess
import sys

SET = sys.argv[1]
FB = sys.argv[2] if len(sys.argv) > 2 else "firebreak"
WORK = sys.argv[3] if len(sys.argv) > 3 else "/tmp/firebreak-misses"
os.makedirs(WORK, exist_ok=True)
os.chdir(WORK)
def ff(args): subprocess.run(["ffmpeg","-v","error","-y"]+args, check=True)
def h(path):
    out=subprocess.run([FB,"hash","pdq",path],capture_output=True,text=True,check=True).stdout.strip().split(",")
    return int(out[0],16), int(out[1])
def d(a,b): return bin(a^b).count("1")
def size(p):
    o=subprocess.run(["ffprobe","-v","error","-select_streams","v","-show_entries","stream=width,height","-of","csv=p=0:s=x",p],capture_output=True,text=True).stdout.strip()
    w,hh=o.split("x"); return int(w),int(hh)
for o in ["chair","doorknob","pattern","pan","mandel","shapes"]:
    t="2"
    ff(["-ss",t,"-i",f"{SET}/originals/{o}.mp4","-frames:v","1",f"{o}-orig.png"])
    ff(["-ss",t,"-i",f"{SET}/copies/{o}__inset.mp4","-frames:v","1",f"{o}-inset.png"])
    ff(["-ss",t,"-i",f"{SET}/copies/{o}__combo.mp4","-frames:v","1",f"{o}-combo.png"])
    W,H=size(f"{o}-inset.png")
    w=(int(W*0.4)//2)*2; hh=(int(H*0.4)//2)*2
    ff(["-i",f"{o}-inset.png","-vf",f"crop={w}:{hh}:{W-w-16}:{H-hh-16}",f"{o}-inset-exact.png"])
    cw=W*40//100; ch=H*40//100
    ff(["-i",f"{o}-inset.png","-vf",f"crop={cw}:{ch}:{W-cw}:{H-ch}",f"{o}-inset-br40.png"])
    ff(["-i",f"{o}-combo.png","-vf","hflip",f"{o}-combo-flip.png"])
    ff(["-i",f"{o}-orig.png","-vf","crop=trunc(iw*0.9/2)*2:trunc(ih*0.9/2)*2",f"{o}-orig-c90.png"])
    ff(["-i",f"{o}-combo-flip.png","-vf","drawbox=x=0:y=ih*0.03:w=iw*0.32:h=ih*0.33:color=black:t=fill",f"{o}-combo-flip-masked.png"])
    ff(["-i",f"{o}-orig-c90.png","-vf","drawbox=x=0:y=ih*0.03:w=iw*0.32:h=ih*0.33:color=black:t=fill",f"{o}-orig-c90-masked.png"])
    H0,_=h(f"{o}-orig.png"); C90,_=h(f"{o}-orig-c90.png")
    print(o, "inset exact rect:", d(h(f"{o}-inset-exact.png")[0],H0), "br40 view:", d(h(f"{o}-inset-br40.png")[0],H0),
          "| combo flipped vs banked centre90:", d(h(f"{o}-combo-flip.png")[0],C90),
          "logo region masked on both:", d(h(f"{o}-combo-flip-masked.png")[0],h(f"{o}-orig-c90-masked.png")[0]))
