#Requires -Version 7.4
<#
.SYNOPSIS
    Measures KvmStorage's converter against qemu-img convert on the same inputs, side by side.
.DESCRIPTION
    Builds its inputs in a temporary folder: a raw image of -SizeGB GiB holding -DataGB GiB of random data,
    512 MiB of written zeros and holes elsewhere, the same image as qcow2 and as a monolithicSparse vmdk, and a
    two-level backing chain (raw base, qcow2 overlay with 256 MiB written, qcow2 overlay on top). Each operation runs
    once with qemu-img convert (defaults, -t unsafe) and once with KvmStorage (a child process, KvmStorage.Bench),
    each under /usr/bin/time for wall time and peak RSS. KvmStorage flushes its output to disk, qemu-img does not,
    so the page cache is synced (and not timed) before each run and qemu-img's time includes a sync of its output.
.EXAMPLE
    dotnet pwsh ./bench/Invoke-Benchmark.ps1 -SizeGB 4 -DataGB 1
#>
[CmdletBinding()]
param(
    [int] $SizeGB = 4,
    [double] $DataGB = 1,
    [string] $WorkFolder = (Join-Path ([IO.Path]::GetTempPath()) "kvmstorage-bench-$PID")
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
$PSNativeCommandUseErrorActionPreference = $true

if (-not (Test-Path /usr/bin/time)) { throw "/usr/bin/time is missing: apt-get install -y time" }
$repo = Split-Path $PSScriptRoot -Parent
$project = Join-Path $PSScriptRoot 'KvmStorage.Bench/KvmStorage.Bench.csproj'
dotnet build $project -c Release -nologo -v:q | Out-Null
$bench = Join-Path $PSScriptRoot 'KvmStorage.Bench/bin/Release/net8.0/KvmStorage.Bench.dll'

New-Item -ItemType Directory -Force $WorkFolder | Out-Null
try {
    $raw = Join-Path $WorkFolder 'input.raw'
    Write-Host "Building inputs in $WorkFolder ($SizeGB GiB, $DataGB GiB random data, 512 MiB zeros)"
    $stream = [IO.File]::Open($raw, 'Create', 'Write')
    try {
        $stream.SetLength([long]$SizeGB * 1GB)
        $buffer = [byte[]]::new(4MB)
        $random = [Random]::new(42)
        $chunks = [int]($DataGB * 1GB / 4MB)
        # Random data in 64 MiB runs spread over the disk, zeros in one run, holes between.
        $stride = [long]$SizeGB * 1GB / [Math]::Max(1, $chunks / 16)
        for ($i = 0; $i -lt $chunks; $i++) {
            $random.NextBytes($buffer)
            $stream.Position = [long][Math]::Floor($i / 16) * $stride + ($i % 16) * 4MB
            $stream.Write($buffer, 0, $buffer.Length)
        }
        [Array]::Clear($buffer)
        $stream.Position = [long]$SizeGB * 1GB - 768MB
        for ($i = 0; $i -lt 128; $i++) { $stream.Write($buffer, 0, $buffer.Length) }
    }
    finally { $stream.Dispose() }
    $qcow2 = Join-Path $WorkFolder 'input.qcow2'
    $vmdk = Join-Path $WorkFolder 'input.vmdk'
    qemu-img convert -f raw -O qcow2 $raw $qcow2
    qemu-img convert -f raw -O vmdk $raw $vmdk
    $mid = Join-Path $WorkFolder 'mid.qcow2'
    $top = Join-Path $WorkFolder 'top.qcow2'
    qemu-img create -q -f qcow2 -b input.raw -F raw $mid
    qemu-io -f qcow2 -c 'write -P 0x5a 100M 256M' $mid | Out-Null
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 $top
    qemu-io -f qcow2 -c 'write -P 0xa5 1G 64M' $top | Out-Null

    $cases = @(
        @{ Name = 'raw -> qcow2'; Source = $raw; SourceFormat = 'raw'; Format = 'qcow2'; Compress = $null }
        @{ Name = 'qcow2 -> raw'; Source = $qcow2; SourceFormat = 'qcow2'; Format = 'raw'; Compress = $null }
        @{ Name = 'raw -> qcow2 zlib'; Source = $raw; SourceFormat = 'raw'; Format = 'qcow2'; Compress = 'zlib' }
        @{ Name = 'chain -> qcow2'; Source = $top; SourceFormat = 'qcow2'; Format = 'qcow2'; Compress = $null }
        @{ Name = 'vmdk -> qcow2'; Source = $vmdk; SourceFormat = 'vmdk'; Format = 'qcow2'; Compress = $null }
    )

    function Measure-Run([string[]] $Command, [string] $Output) {
        if (Test-Path $Output) { Remove-Item $Output }
        sync
        $timeFile = Join-Path $WorkFolder 'time.txt'
        $clock = [Diagnostics.Stopwatch]::StartNew()
        /usr/bin/time -f '%e %M' -o $timeFile @Command
        sync $Output
        $seconds = $clock.Elapsed.TotalSeconds
        $rssKiB = [long]((Get-Content $timeFile -Tail 1) -split ' ')[1]
        Remove-Item $Output
        [pscustomobject]@{ Seconds = $seconds; PeakMiB = [Math]::Round($rssKiB / 1024, 1) }
    }

    $virtualMB = [long]$SizeGB * 1GB / 1e6
    $rows = foreach ($case in $cases) {
        Write-Host "Running $($case.Name)"
        $out = Join-Path $WorkFolder ("out." + $case.Format)
        $qemuArgs = @('qemu-img', 'convert', '-f', $case.SourceFormat, '-O', $case.Format)
        if ($case.Compress) { $qemuArgs += @('-c') }
        $qemu = Measure-Run ($qemuArgs + @($case.Source, $out)) $out
        $oursArgs = @('dotnet', $bench, $case.Source, $out, $case.Format)
        if ($case.Compress) { $oursArgs += $case.Compress }
        $ours = Measure-Run $oursArgs $out
        [pscustomobject]@{
            Operation      = $case.Name
            'qemu-img s'   = [Math]::Round($qemu.Seconds, 2)
            'KvmStorage s' = [Math]::Round($ours.Seconds, 2)
            'qemu MB/s'    = [Math]::Round($virtualMB / $qemu.Seconds)
            'ours MB/s'    = [Math]::Round($virtualMB / $ours.Seconds)
            Ratio          = [Math]::Round($qemu.Seconds / $ours.Seconds, 2)
            'qemu peak MiB' = $qemu.PeakMiB
            'ours peak MiB' = $ours.PeakMiB
        }
    }

    Write-Host ("{0} cores, {1}, {2}" -f [Environment]::ProcessorCount, (Get-Date -Format 'yyyy-MM-dd'), (qemu-img --version | Select-Object -First 1))
    $rows | Format-Table -AutoSize | Out-String -Width 200 | Write-Host
    $rows
}
finally {
    Remove-Item -Recurse -Force $WorkFolder -ErrorAction SilentlyContinue
}
