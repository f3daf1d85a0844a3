#Requires -Version 7.4
<#
.SYNOPSIS
    Times a conversion with progress on and off under a pseudo-terminal that answers nothing (script -qc).
.DESCRIPTION
    Automation tools and `script` give pwsh a terminal that never answers cursor-position queries, and each progress
    drawing then waits for an answer (about 2.4 s measured). Makes a 2 GiB raw volume holding 1 GiB of data in a
    scratch host root, then, each round, converts it to qcow2 with Convert-Volume in a fresh pwsh under
    `script -qc ... /dev/null`: once with $ProgressPreference = 'Continue' and once 'SilentlyContinue'. The whole
    child run is timed (the drawing happens in it). Prints every round and the medians and their ratio
    (progress on / off); the goal is under 2.
.EXAMPLE
    dotnet pwsh ./bench/Invoke-ProgressBenchmark.ps1 -Rounds 3
#>
[CmdletBinding()]
param(
    [string] $ModulePath,
    [int] $Rounds = 3,
    [string] $WorkFolder = (Join-Path ([IO.Path]::GetTempPath()) "kvmstorage-progress-bench-$PID")
)

$ErrorActionPreference = 'Stop'
$repo = Split-Path -Parent $PSScriptRoot
if (-not $ModulePath) {
    & (Join-Path $repo 'build.ps1') -Task Package | Out-Null
    $ModulePath = (Get-ChildItem (Join-Path $repo 'out/KvmStorage') -Recurse -Filter KvmStorage.psd1 | Select-Object -First 1).FullName
}
if (-not (Get-Command script -ErrorAction SilentlyContinue)) { throw 'script (util-linux) is needed for the benchmark.' }

$pwsh = [Environment]::ProcessPath
$first = [Environment]::GetCommandLineArgs()[0]
$prefix = if ([IO.Path]::GetFileNameWithoutExtension($pwsh) -eq 'dotnet' -and $first -like '*.dll') { "'$pwsh' '$first'" } else { "'$pwsh'" }

New-Item -ItemType Directory -Force $WorkFolder | Out-Null
try {
    $root = Join-Path $WorkFolder 'root'
    $images = Join-Path $root 'images'
    New-Item -ItemType Directory -Force $images | Out-Null
    $source = Join-Path $images 'disk.img'
    $stream = [IO.File]::Open($source, 'Create', 'Write')
    try {
        $stream.SetLength(2GB)
        $chunk = [byte[]]::new(4MB); [Random]::new(1).NextBytes($chunk)
        for ($i = 0; $i -lt 256; $i++) { $stream.Position = $i * 8MB; $stream.Write($chunk, 0, $chunk.Length) }
    }
    finally { $stream.Dispose() }

    $script = Join-Path $WorkFolder 'child.ps1'
    @'
param($Module, $Root, $Preference)
$env:KVMSTORAGE_ROOT = $Root
Import-Module $Module
if (-not (Get-StoragePool bench -ErrorAction SilentlyContinue)) { New-StoragePool -Name bench -Path /images | Out-Null }
Remove-Item -LiteralPath (Join-Path $Root 'images/out.qcow2') -ErrorAction SilentlyContinue
$ProgressPreference = $Preference
Convert-Volume -Volume /images/disk.img -Format qcow2 -Name out.qcow2 | Out-Null
'@ | Set-Content -LiteralPath $script

    $times = @{ Continue = [Collections.Generic.List[double]]::new(); SilentlyContinue = [Collections.Generic.List[double]]::new() }
    for ($round = 1; $round -le $Rounds; $round++) {
        foreach ($preference in 'Continue', 'SilentlyContinue') {
            $command = "$prefix -NoProfile -NonInteractive -File '$script' -Module '$ModulePath' -Root '$root' -Preference $preference"
            $clock = [Diagnostics.Stopwatch]::StartNew()
            & script -qc $command /dev/null | Out-Null
            $clock.Stop()
            if ($LASTEXITCODE -ne 0) { throw "The child run failed ($preference)." }
            $times[$preference].Add($clock.Elapsed.TotalSeconds)
            '{0} round {1}: progress {2}: {3:N2} s' -f (Get-Date -Format s), $round, $(if ($preference -eq 'Continue') { 'on ' } else { 'off' }), $clock.Elapsed.TotalSeconds
        }
    }
    $median = { param($list) $sorted = @($list | Sort-Object); $sorted[[int][Math]::Floor(($sorted.Count - 1) / 2)] }
    $on = & $median $times.Continue
    $off = & $median $times.SilentlyContinue
    '{0:N2} s with progress, {1:N2} s without: ratio {2:N2} (load {3})' -f $on, $off, ($on / $off), ((Get-Content /proc/loadavg) -split ' ')[0]
}
finally {
    Remove-Item -LiteralPath $WorkFolder -Recurse -Force -ErrorAction SilentlyContinue
}
