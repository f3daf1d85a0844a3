#Requires -Version 7.4
<#
.SYNOPSIS
    Times Merge-Volume against qemu-img commit on the same inputs, optionally for a second (baseline) build too.
.DESCRIPTION
    Makes a 2 GiB qcow2 base holding 512 MiB of data (8 runs of 64 MiB) and an overlay holding 512 MiB more, half
    over data the base has (overwritten in place) and half over holes (allocated). Each round copies both, then runs
    qemu-img commit (its output synced, as Merge-Volume flushes), Merge-Volume of -ModulePath and, with
    -BaselineModulePath, Merge-Volume of that build, each module in a fresh pwsh process; only the merge is timed.
    Prints every round and the median seconds and ratio (ours / qemu) of each. Needs qemu-img and qemu-io.
.EXAMPLE
    dotnet pwsh ./bench/Invoke-MergeBenchmark.ps1 -BaselineModulePath ../main/out/KvmStorage/0.1.0/KvmStorage.psd1
#>
[CmdletBinding()]
param(
    [string] $ModulePath,
    [string] $BaselineModulePath,
    [int] $Rounds = 5,
    [string] $WorkFolder = (Join-Path ([IO.Path]::GetTempPath()) "kvmstorage-merge-bench-$PID")
)

$ErrorActionPreference = 'Stop'
$repo = Split-Path -Parent $PSScriptRoot
if (-not $ModulePath) {
    & (Join-Path $repo 'build.ps1') -Task Package | Out-Null
    $ModulePath = (Get-ChildItem (Join-Path $repo 'out/KvmStorage') -Recurse -Filter KvmStorage.psd1 | Select-Object -First 1).FullName
}
foreach ($tool in 'qemu-img', 'qemu-io') {
    if (-not (Get-Command $tool -ErrorAction SilentlyContinue)) { throw "$tool is needed for the benchmark." }
}

# One merge in a fresh process (a loaded binary module cannot be unloaded), in a scratch host root.
$child = @'
param($Module, $Root)
$env:KVMSTORAGE_ROOT = $Root
Import-Module $Module
New-StoragePool -Name bench -Path /images -Build | Out-Null
$clock = [Diagnostics.Stopwatch]::StartNew()
Merge-Volume -Volume /images/top.qcow2 -Force -Confirm:$false | Out-Null
$clock.Elapsed.TotalSeconds
'@

New-Item -ItemType Directory -Force $WorkFolder | Out-Null
try {
    $base = Join-Path $WorkFolder 'base.qcow2'
    $top = Join-Path $WorkFolder 'top.qcow2'
    qemu-img create -q -f qcow2 $base 2G
    qemu-img create -q -f qcow2 -b $base -F qcow2 $top
    for ($i = 0; $i -lt 8; $i++) {
        qemu-io -c "write -q -P $(16 + $i) $($i * 256)M 64M" $base | Out-Null
        qemu-io -c "write -q -P $(80 + $i) $($i * 256 + 32)M 64M" $top | Out-Null
    }
    $script = Join-Path $WorkFolder 'merge.ps1'
    Set-Content -LiteralPath $script -Value $child

    $builds = [ordered]@{ 'qemu-img' = $null; 'module' = $ModulePath }
    if ($BaselineModulePath) { $builds['baseline'] = $BaselineModulePath }
    $times = @{}
    foreach ($name in $builds.Keys) { $times[$name] = [Collections.Generic.List[double]]::new() }
    for ($round = 1; $round -le $Rounds; $round++) {
        foreach ($name in $builds.Keys) {
            $root = Join-Path $WorkFolder "root-$name"
            Remove-Item -Recurse -Force $root -ErrorAction SilentlyContinue
            $images = Join-Path $root 'images'
            New-Item -ItemType Directory -Force $images | Out-Null
            Copy-Item $base, $top $images
            $copyTop = Join-Path $images 'top.qcow2'
            $backing = if ($builds[$name]) { '/images/base.qcow2' } else { Join-Path $images 'base.qcow2' }
            qemu-img rebase -u -b $backing -F qcow2 $copyTop
            sync
            if ($builds[$name]) {
                $seconds = [double](dotnet pwsh -NoProfile -File $script -Module $builds[$name] -Root $root | Select-Object -Last 1)
            }
            else {
                $clock = [Diagnostics.Stopwatch]::StartNew()
                qemu-img commit -q $copyTop
                sync (Join-Path $images 'base.qcow2')
                $seconds = $clock.Elapsed.TotalSeconds
            }
            $times[$name].Add($seconds)
            Write-Host ("round {0} {1,-9} {2:N2} s" -f $round, $name, $seconds)
            Remove-Item -Recurse -Force $root
        }
    }

    $median = { param($list) $sorted = $list | Sort-Object; $sorted[[int][Math]::Floor(($sorted.Count - 1) / 2)] }
    $qemu = & $median $times['qemu-img']
    $rows = foreach ($name in $builds.Keys) {
        $m = & $median $times[$name]
        [pscustomobject]@{ Build = $name; 'Median s' = [Math]::Round($m, 2); 'Ratio (s / qemu s)' = [Math]::Round($m / $qemu, 2) }
    }
    Write-Host ("{0} cores, {1}, {2}" -f [Environment]::ProcessorCount, (Get-Date -Format 'yyyy-MM-dd'), (qemu-img --version | Select-Object -First 1))
    $rows | Format-Table -AutoSize | Out-String -Width 200 | Write-Host
    $rows
}
finally {
    Remove-Item -Recurse -Force $WorkFolder -ErrorAction SilentlyContinue
}
