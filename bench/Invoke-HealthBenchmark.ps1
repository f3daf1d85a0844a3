#Requires -Version 7.4
<#
.SYNOPSIS
    Times Test-Volume against qemu-img check and Compare-Volume against qemu-img compare.
.DESCRIPTION
    Builds (unless -ModulePath is given) and imports the module, makes a 4 GiB qcow2 holding 1 GiB of data
    (16 runs of 64 MiB spread over the disk, written by qemu-io) and a copy of it with one byte changed near the
    end, then runs each command -Repeat times (warm page cache) and prints the best seconds and the ratio
    (ours / qemu). Needs qemu-img and qemu-io.
.EXAMPLE
    dotnet pwsh ./bench/Invoke-HealthBenchmark.ps1
#>
[CmdletBinding()]
param(
    [string] $ModulePath,
    [string] $WorkDirectory = (Join-Path ([IO.Path]::GetTempPath()) "kvmstorage-health-bench"),
    [int] $Repeat = 3
)

$ErrorActionPreference = 'Stop'
$repo = Split-Path -Parent $PSScriptRoot
if (-not $ModulePath) {
    & (Join-Path $repo 'build.ps1') -Task Package | Out-Null
    $ModulePath = (Get-ChildItem (Join-Path $repo 'out/KvmStorage') -Recurse -Filter KvmStorage.psd1 | Select-Object -First 1).FullName
}
Import-Module (Resolve-Path $ModulePath).Path -Force
foreach ($tool in 'qemu-img', 'qemu-io') {
    if (-not (Get-Command $tool -ErrorAction SilentlyContinue)) { throw "$tool is needed for the benchmark." }
}

New-Item -ItemType Directory -Force -Path $WorkDirectory | Out-Null
$a = Join-Path $WorkDirectory 'a.qcow2'
$b = Join-Path $WorkDirectory 'b.qcow2'
Remove-Item $a, $b -ErrorAction SilentlyContinue
qemu-img create -q -f qcow2 $a 4G
$writes = foreach ($i in 0..15) { '-c'; "write -q -P $((0x10 + $i) % 256) $($i * 256)M 64M" }
qemu-io @writes $a | Out-Null
qemu-img convert -O qcow2 $a $b
qemu-io -c 'write -q -P 0x99 3900M 512' $b | Out-Null
# Empty images that declare far more than they hold: a compare must cost what they hold.
$huge = Join-Path $WorkDirectory 'huge-4p.qcow2'
$wide = Join-Path $WorkDirectory 'wide-256t.qcow2'
Remove-Item $huge, $wide -ErrorAction SilentlyContinue
qemu-img create -q -f qcow2 -o cluster_size=2M $huge 4P
qemu-img create -q -f qcow2 $wide 256T

function Measure-Best([scriptblock] $Action) {
    $best = [double]::MaxValue
    for ($i = 0; $i -lt $Repeat; $i++) {
        $clock = [Diagnostics.Stopwatch]::StartNew()
        & $Action | Out-Null
        $best = [Math]::Min($best, $clock.Elapsed.TotalSeconds)
    }
    $best
}

function Measure-Allocated([scriptblock] $Action) {
    # What the engine allocates for the run (managed bytes), in MiB.
    $before = [GC]::GetTotalAllocatedBytes($true)
    & $Action | Out-Null
    [Math]::Round(([GC]::GetTotalAllocatedBytes($true) - $before) / 1MB, 1)
}

$rows = @(
    [pscustomobject]@{
        Operation = 'check (4 GiB qcow2, 1 GiB data)'
        Ours      = Measure-Best { Test-Volume -LiteralPath $a }
        Qemu      = Measure-Best { qemu-img check $a }
    }
    [pscustomobject]@{
        Operation = 'compare (two such images, differ at 3900 MiB)'
        Ours      = Measure-Best { Compare-Volume $a $b }
        Qemu      = Measure-Best { qemu-img compare $a $b }
    }
    [pscustomobject]@{
        Operation = 'compare (empty 4 PiB qcow2, 2 MiB clusters, with itself)'
        Ours      = Measure-Best { Compare-Volume $huge $huge }
        Qemu      = Measure-Best { qemu-img compare $huge $huge }
        AllocatedMiB = Measure-Allocated { Compare-Volume $huge $huge }
    }
    [pscustomobject]@{
        Operation = 'compare (empty 256 TiB qcow2, 64 KiB clusters, with itself)'
        Ours      = Measure-Best { Compare-Volume $wide $wide }
        Qemu      = Measure-Best { qemu-img compare $wide $wide }
        AllocatedMiB = Measure-Allocated { Compare-Volume $wide $wide }
    }
)
$rows | ForEach-Object { $_ | Add-Member -PassThru Ratio ([Math]::Round($_.Ours / $_.Qemu, 2)) } |
    Format-Table Operation, @{ N = 'Ours (s)'; E = { '{0:N3}' -f $_.Ours } }, @{ N = 'qemu-img (s)'; E = { '{0:N3}' -f $_.Qemu } }, Ratio, AllocatedMiB -AutoSize | Out-String -Width 220
"Load average at start: $((Get-Content /proc/loadavg) -split ' ' | Select-Object -First 3)"
Remove-Item $a, $b, $huge, $wide
