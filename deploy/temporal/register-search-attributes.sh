#!/bin/sh
# Registers signoff's custom search attributes on the Temporal namespace. Idempotent.
# Runs in temporalio/admin-tools (compose service `temporal-setup`, Kubernetes Job
# `signoff-temporal-search-attributes`). The temporal CLI reads TEMPORAL_ADDRESS,
# TEMPORAL_NAMESPACE and, for Temporal Cloud, TEMPORAL_TLS_CERT / TEMPORAL_TLS_KEY or
# TEMPORAL_API_KEY from the environment.
set -eu

: "${TEMPORAL_ADDRESS:?set TEMPORAL_ADDRESS}"
: "${TEMPORAL_NAMESPACE:=default}"
export TEMPORAL_NAMESPACE

tries=0
until temporal operator cluster health >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "Temporal at $TEMPORAL_ADDRESS is not healthy after 120s" >&2
    exit 1
  fi
  sleep 2
done

for spec in \
  SignoffStatus=Keyword \
  SignoffAction=Keyword \
  SignoffTarget=Keyword \
  SignoffRequester=Keyword \
  SignoffRisk=Keyword \
  SignoffEscalation=Int \
  SignoffGroups=KeywordList \
  SignoffBreakGlass=Keyword \
  SignoffExpires=Datetime \
  SignoffWindowStatus=Keyword \
  SignoffWindowHolder=Keyword \
  SignoffWindowExpires=Datetime \
  SignoffActiveUntil=Datetime
do
  name=${spec%%=*}
  type=${spec#*=}
  if out=$(temporal operator search-attribute create --name "$name" --type "$type" 2>&1); then
    echo "created $name ($type)"
  elif echo "$out" | grep -qi "already exists"; then
    echo "exists  $name ($type)"
  else
    echo "$out" >&2
    exit 1
  fi
done
temporal operator search-attribute list
