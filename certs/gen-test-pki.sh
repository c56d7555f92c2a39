#!/bin/sh
mkdir -p "$2"; exit 0
