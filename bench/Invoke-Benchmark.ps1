#Requires -Version 7.4
<#
.SYNOPSIS
    Times every data operation of the module against qemu-img on the same inputs, side by side, in one run.
.DESCRIPTION
    Builds one input layout (fixed, so runs compare): a raw image of -SizeGB GiB with -DataMB MiB of random data in
    64 MiB runs spread over its first seven eighths, -ZeroMB MiB of written zeros in its last eighth (never over a
    data run) and holes elsewhere; from it, with qemu-img: the same image as qcow2, as a streamOptimized vmdk, as vdi
    and as vhdx, and a backing chain (the raw image; a qcow2 overlay with a quarter of the size written from the first
    eighth on: 256 MiB of 1 GiB; a qcow2 overlay on top with a sixteenth written at the middle: 64 MiB).

    Each operation runs -Rounds times on each side; the median counts. qemu-img runs as a process; its time is given
    without and with `sync FILE` of its output (the module's commands return only when their output is on disk, so
    only the second is the like-for-like figure; the first is what qemu-img itself promises). The module's side is
    the cmdlet, timed in this pwsh session with the module imported once (a warm session, as in an interactive
    shell or one script doing several jobs). Dirty pages are written out (untimed) before every run. Ratio =
    qemu-img seconds / module seconds: above 1 the module is faster.

    Memory: qemu-img's peak resident set (from /usr/bin/time); for the module, how far the session's peak resident
    set rises above its resident set before the cmdlet (the peak is reset through /proc/self/clear_refs first), so
    pwsh's own footprint is not counted.

    Then the cold call (the scheduled-script case): a fresh `pwsh -NoProfile -c 1`, a fresh pwsh that imports the
    module, and a fresh pwsh that imports it and runs Compare-Volume, each -Rounds times; the module's share of a
    cold call is (cold compare) - (bare pwsh) - (warm compare).

    Prints the machine (cores, load average at the start, kernel, qemu-img version, date) and the table, and with
    -PassThru returns one object per operation and one for the cold call. Needs qemu-img, qemu-io, /usr/bin/time and sync (Debian: qemu-utils, time).
.EXAMPLE
    dotnet pwsh ./bench/Invoke-Benchmark.ps1
.EXAMPLE
    dotnet pwsh ./bench/Invoke-Benchmark.ps1 -Operation 'raw -> qcow2', 'safe rebase' -Rounds 5
#>
[CmdletBinding()]
param(
    [double] $SizeGB = 1,
    [int] $DataMB = 320,
    [int] $ZeroMB = 128,
    [ValidateRange(1, 99)]
    [int] $Rounds = 3,
    # Only the operations whose names match (wildcards); all when omitted.
    [string[]] $Operation = '*',
    # Skip the cold-call measurement.
    [switch] $NoColdCall,
    # Also return the rows as objects (for ConvertTo-Json and the like).
    [switch] $PassThru,
    # The built module's manifest; by default the build's own package (built first).
    [string] $ModulePath,
    [string] $WorkFolder = (Join-Path ([IO.Path]::GetTempPath()) "kvmstorage-bench-$PID")
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
$PSNativeCommandUseErrorActionPreference = $true

foreach ($tool in 'qemu-img', 'qemu-io', '/usr/bin/time', 'sync') {
    if (-not (Get-Command $tool -ErrorAction SilentlyContinue)) { throw "$tool is needed for the benchmark (Debian: apt-get install qemu-utils time)." }
}
# The passphrase of the encrypted operations' images (a benchmark value, not a secret).
$BenchSecret = 'kvmstorage-bench'
$benchPassphrase = ConvertTo-SecureString $BenchSecret -AsPlainText -Force
$loadAtStart = (Get-Content /proc/loadavg) -split ' ' | Select-Object -First 3
$repo = Split-Path -Parent $PSScriptRoot
if (-not $ModulePath) {
    & (Join-Path $repo 'build.ps1') -Task Package | Out-Null
    $ModulePath = (Get-ChildItem (Join-Path $repo 'out/KvmStorage') -Recurse -Filter KvmStorage.psd1 | Select-Object -First 1).FullName
}
if ($ZeroMB -gt $SizeGB * 1024 / 8) { throw "-ZeroMB must fit in the last eighth of the image ($($SizeGB * 1024 / 8) MiB)." }
if ($DataMB -gt $SizeGB * 1024 * 7 / 8) { throw "-DataMB must fit in the first seven eighths of the image." }

$root = Join-Path $WorkFolder 'root'
$images = Join-Path $root 'images'          # the pool folder, also where qemu-img works
$exports = Join-Path $WorkFolder 'exports'
New-Item -ItemType Directory -Force $images, $exports | Out-Null

function Get-Median([double[]] $Values) {
    $sorted = @($Values | Sort-Object)
    $sorted[[int][Math]::Floor(($sorted.Count - 1) / 2)]
}

function Read-StatusKiB([string] $Field) {
    $line = Select-String -LiteralPath /proc/self/status -Pattern "^${Field}:\s+(\d+) kB" | Select-Object -First 1
    [long]$line.Matches[0].Groups[1].Value
}

function Copy-Fresh([string[]] $Names) {
    # Mutating operations (rebase, merge) work on fresh copies; cp keeps holes as holes.
    foreach ($n in $Names) { & cp --sparse=always (Join-Path $images "template-$n") (Join-Path $images $n) }
}

function Remove-Outputs {
    Get-ChildItem -LiteralPath $images -Filter 'out.*' | Remove-Item -Force
    Get-ChildItem -LiteralPath $exports | Remove-Item -Force
}

try {
    # --- inputs -----------------------------------------------------------------------------------------------
    $size = [long]($SizeGB * 1GB)
    $raw = Join-Path $images 'input.raw'
    Write-Host ("Building inputs in {0}: {1} GiB raw, {2} MiB random data in 64 MiB runs, {3} MiB written zeros" -f $WorkFolder, $SizeGB, $DataMB, $ZeroMB)
    $stream = [IO.File]::Open($raw, 'CreateNew', 'Write')
    try {
        $stream.SetLength($size)
        $buffer = [byte[]]::new(4MB)
        $random = [Random]::new(42)
        $runs = [Math]::Max(1, [int][Math]::Ceiling($DataMB / 64))
        $dataArea = [long]($size * 7 / 8)
        $stride = [long]([Math]::Floor($dataArea / $runs / 1MB)) * 1MB
        $left = [long]$DataMB * 1MB
        for ($r = 0; $r -lt $runs; $r++) {
            $stream.Position = $r * $stride
            $runLeft = [Math]::Min(64MB, $left)
            while ($runLeft -gt 0) {
                $random.NextBytes($buffer)
                $n = [int][Math]::Min($buffer.Length, $runLeft)
                $stream.Write($buffer, 0, $n)
                $runLeft -= $n; $left -= $n
            }
        }
        [Array]::Clear($buffer)
        $stream.Position = $size - [long]($size / 8)
        for ($z = [long]$ZeroMB * 1MB; $z -gt 0; $z -= $buffer.Length) { $stream.Write($buffer, 0, [int][Math]::Min($buffer.Length, $z)) }
    }
    finally { $stream.Dispose() }
    Push-Location $images
    try {
        qemu-img convert -f raw -O qcow2 input.raw input.qcow2
        qemu-img convert -f raw -O vmdk -o subformat=streamOptimized input.raw input-stream.vmdk
        qemu-img convert -f raw -O vdi input.raw input.vdi
        qemu-img convert -f raw -O vhdx input.raw input.vhdx
        # The chain, relative backing names so both sides resolve them alike.
        qemu-img create -q -f qcow2 -b input.raw -F raw template-mid.qcow2
        $mib = [long]($size / 1MB)
        qemu-io -f qcow2 -c "write -q -P 0x5a $($mib / 8)M $($mib / 4)M" template-mid.qcow2 | Out-Null
        & cp --sparse=always template-mid.qcow2 mid.qcow2     # the top's backing name
        qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 template-top.qcow2
        qemu-io -f qcow2 -c "write -q -P 0xa5 $($mib / 2)M $($mib / 16)M" template-top.qcow2 | Out-Null
        # Encrypted inputs (LUKS in qcow2, a LUKS file). qemu 7.2's PBKDF2 calibration fails now and then on a
        # coarse CPU clock ("Unable to get accurate CPU usage"): retried.
        foreach ($luks in @(@('-O', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10', 'input.raw', 'input-luks.qcow2'), @('-O', 'luks', '-o', 'key-secret=s0,iter-time=10', 'input.raw', 'input.luks'))) {
            $PSNativeCommandUseErrorActionPreference = $false
            for ($try = 0; $try -lt 20; $try++) {
                qemu-img convert --object "secret,id=s0,data=$BenchSecret" -f raw @luks 2>$null
                if ($LASTEXITCODE -eq 0) { break }
            }
            $PSNativeCommandUseErrorActionPreference = $true
            if ($LASTEXITCODE -ne 0) { throw "qemu-img could not write the encrypted input $($luks[-1])." }
        }
    }
    finally { Pop-Location }
    Copy-Fresh 'mid.qcow2', 'top.qcow2'

    $env:KVMSTORAGE_ROOT = $root
    Import-Module $ModulePath -Force
    if (-not (Get-StoragePool -Name bench -ErrorAction SilentlyContinue)) { New-StoragePool -Name bench -Path /images | Out-Null }

    # --- operations: qemu-img's command (run in the pool folder), the file it writes, and the module's cmdlet -----
    $local = { param($name) Join-Path $images $name }
    $operations = @(
        @{ Name = 'raw -> qcow2'; Qemu = 'convert -f raw -O qcow2 input.raw out.qcow2'; Output = 'out.qcow2'
            Ours = { Convert-Volume /images/input.raw qcow2 -Name out.qcow2 -Confirm:$false } }
        @{ Name = 'qcow2 -> raw'; Qemu = 'convert -f qcow2 -O raw input.qcow2 out.raw'; Output = 'out.raw'
            Ours = { Convert-Volume /images/input.qcow2 raw -Name out.raw -Confirm:$false } }
        @{ Name = 'chain -> qcow2 (Copy-Volume)'; Qemu = 'convert -O qcow2 top.qcow2 out.qcow2'; Output = 'out.qcow2'
            Ours = { Copy-Volume /images/top.qcow2 out.qcow2 -Confirm:$false } }
        @{ Name = 'streamOptimized vmdk -> qcow2 (Import-Volume)'; Qemu = 'convert -f vmdk -O qcow2 input-stream.vmdk out.qcow2'; Output = 'out.qcow2'
            Ours = { Import-Volume -Path (& $local 'input-stream.vmdk') -Pool bench -Name out.qcow2 -Format qcow2 -Confirm:$false } }
        @{ Name = 'vdi -> qcow2 (Import-Volume)'; Qemu = 'convert -f vdi -O qcow2 input.vdi out.qcow2'; Output = 'out.qcow2'
            Ours = { Import-Volume -Path (& $local 'input.vdi') -Pool bench -Name out.qcow2 -Format qcow2 -Confirm:$false } }
        @{ Name = 'vhdx -> qcow2 (Import-Volume)'; Qemu = 'convert -f vhdx -O qcow2 input.vhdx out.qcow2'; Output = 'out.qcow2'
            Ours = { Import-Volume -Path (& $local 'input.vhdx') -Pool bench -Name out.qcow2 -Format qcow2 -Confirm:$false } }
        @{ Name = 'qcow2 -> streamOptimized vmdk (Export-Volume)'; Qemu = "convert -f qcow2 -O vmdk -o subformat=streamOptimized input.qcow2 $exports/out.vmdk"; Output = "$exports/out.vmdk"
            Ours = { Export-Volume /images/input.qcow2 -Destination (Join-Path $exports 'out.vmdk') -Format vmdk -Confirm:$false } }
        @{ Name = 'qcow2 -> vhdx (Convert-Volume)'; Qemu = 'convert -f qcow2 -O vhdx input.qcow2 out.vhdx'; Output = 'out.vhdx'
            Ours = { Convert-Volume /images/input.qcow2 vhdx -Name out.vhdx -Confirm:$false } }
        @{ Name = 'qcow2 -> vpc dynamic (Convert-Volume)'; Qemu = 'convert -f qcow2 -O vpc input.qcow2 out.vhd'; Output = 'out.vhd'
            Ours = { Convert-Volume /images/input.qcow2 vpc -Name out.vhd -Confirm:$false } }
        @{ Name = 'qcow2 -> vpc fixed, Azure (Export-Volume)'; Qemu = "convert -f qcow2 -O vpc -o subformat=fixed,force_size=on input.qcow2 $exports/out.vhd"; Output = "$exports/out.vhd"
            Ours = { Export-Volume /images/input.qcow2 -Destination (Join-Path $exports 'out.vhd') -Format vpc -Fixed -ForceSize -Confirm:$false } }
        @{ Name = 'qcow2 -> vdi (Convert-Volume)'; Qemu = 'convert -f qcow2 -O vdi input.qcow2 out.vdi'; Output = 'out.vdi'
            Ours = { Convert-Volume /images/input.qcow2 vdi -Name out.vdi -Confirm:$false } }
        @{ Name = 'raw -> qcow2 zlib (-Compress)'; Qemu = 'convert -c -f raw -O qcow2 input.raw out.qcow2'; Output = 'out.qcow2'
            Ours = { Convert-Volume /images/input.raw qcow2 -Name out.qcow2 -Compress -Confirm:$false } }
        @{ Name = 'raw -> LUKS qcow2 (-Encrypt)'; Luks = $true; Qemu = "convert --object secret,id=s0,data=$BenchSecret -f raw -O qcow2 -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 input.raw out.qcow2"; Output = 'out.qcow2'
            Ours = { Convert-Volume /images/input.raw qcow2 -Name out.qcow2 -Encrypt -Passphrase $benchPassphrase -IterationTime 10 -Confirm:$false } }
        @{ Name = 'raw -> LUKS file (-Encrypt)'; Luks = $true; Qemu = "convert --object secret,id=s0,data=$BenchSecret -f raw -O luks -o key-secret=s0,iter-time=10 input.raw out.luks"; Output = 'out.luks'
            Ours = { Convert-Volume /images/input.raw raw -Name out.luks -Encrypt -Passphrase $benchPassphrase -IterationTime 10 -Confirm:$false } }
        @{ Name = 'LUKS qcow2 -> raw (-Passphrase)'; Luks = $true; Qemu = "convert --object secret,id=s0,data=$BenchSecret --image-opts driver=qcow2,file.filename=input-luks.qcow2,encrypt.key-secret=s0 -O raw out.raw"; Output = 'out.raw'
            Ours = { Convert-Volume /images/input-luks.qcow2 raw -Name out.raw -Passphrase $benchPassphrase -Confirm:$false 3>$null } }
        @{ Name = 'LUKS file -> qcow2 (-Passphrase)'; Luks = $true; Qemu = "convert --object secret,id=s0,data=$BenchSecret --image-opts driver=luks,file.filename=input.luks,key-secret=s0 -O qcow2 out.qcow2"; Output = 'out.qcow2'
            Ours = { Convert-Volume /images/input.luks qcow2 -Name out.qcow2 -Passphrase $benchPassphrase -Confirm:$false 3>$null } }
        @{ Name = 'Compare-Volume'; Qemu = 'compare -f raw -F qcow2 input.raw input.qcow2'; Output = $null
            Ours = { Compare-Volume /images/input.raw /images/input.qcow2 } }
        @{ Name = 'Test-Volume'; Qemu = 'check -f qcow2 input.qcow2'; Output = $null
            Ours = { Test-Volume /images/input.qcow2 } }
        @{ Name = 'safe rebase (Set-Volume)'; Fresh = 'mid.qcow2', 'top.qcow2'; Qemu = 'rebase -f qcow2 -b input.raw -F raw top.qcow2'; Output = 'top.qcow2'
            Ours = { Set-Volume /images/top.qcow2 -BackingVolume /images/input.raw -BackingFormat raw -Confirm:$false } }
        @{ Name = 'merge (Merge-Volume)'; Fresh = 'mid.qcow2', 'top.qcow2'; Qemu = 'commit -f qcow2 top.qcow2'; Output = 'mid.qcow2'
            Ours = { Merge-Volume /images/top.qcow2 -Force -Confirm:$false } }
    ) | Where-Object { $n = $_.Name; @($Operation | Where-Object { $n -like $_ }).Count -gt 0 }

    $timeFile = Join-Path $WorkFolder 'time.txt'
    $results = foreach ($op in $operations) {
        $qemu = [Collections.Generic.List[double]]::new(); $qemuSync = [Collections.Generic.List[double]]::new()
        $ours = [Collections.Generic.List[double]]::new(); $qemuKiB = [Collections.Generic.List[double]]::new()
        $oursKiB = [Collections.Generic.List[double]]::new()
        for ($round = 1; $round -le $Rounds; $round++) {
            # qemu-img
            Remove-Outputs
            if ($op.ContainsKey('Fresh')) { Copy-Fresh $op.Fresh }
            & sync
            Push-Location $images
            try {
                $clock = [Diagnostics.Stopwatch]::StartNew()
                # compare exits 1 when the images differ; neither that nor check's findings are failures here.
                $PSNativeCommandUseErrorActionPreference = $false
                & /usr/bin/time -f '%M' -o $timeFile qemu-img @($op.Qemu -split ' ') 2>$null | Out-Null
                # An encrypting run that failed its PBKDF2 calibration (qemu 7.2, coarse CPU clock) is timed again.
                for ($try = 0; $op.ContainsKey('Luks') -and $LASTEXITCODE -ne 0 -and $try -lt 20; $try++) {
                    if ($op.Output) { Remove-Item -Force -ErrorAction SilentlyContinue $op.Output }
                    $clock.Restart()
                    & /usr/bin/time -f '%M' -o $timeFile qemu-img @($op.Qemu -split ' ') 2>$null | Out-Null
                }
                $elapsed = $clock.Elapsed.TotalSeconds
                $PSNativeCommandUseErrorActionPreference = $true
                if ($op.Output) { & sync ($op.Output) }
                $synced = $clock.Elapsed.TotalSeconds
            }
            finally { Pop-Location }
            $qemu.Add($elapsed); $qemuSync.Add($synced)
            $qemuKiB.Add([double]((Get-Content $timeFile | Select-Object -Last 1).Trim()))

            # the module, in this warm session
            Remove-Outputs
            if ($op.ContainsKey('Fresh')) { Copy-Fresh $op.Fresh }
            & sync
            [GC]::Collect()
            $refs = [IO.FileStream]::new('/proc/self/clear_refs', 'Open', 'Write')   # 5: reset VmHWM to the resident set
            try { $refs.Write([byte[]](0x35, 0x0a), 0, 2) } finally { $refs.Dispose() }
            $before = Read-StatusKiB VmRSS
            $clock = [Diagnostics.Stopwatch]::StartNew()
            & $op.Ours | Out-Null
            $ours.Add($clock.Elapsed.TotalSeconds)
            $oursKiB.Add([double]((Read-StatusKiB VmHWM) - $before))
        }
        $q = Get-Median $qemu; $qs = Get-Median $qemuSync; $o = Get-Median $ours
        [pscustomobject]@{
            Operation          = $op.Name
            'qemu-img s'       = [Math]::Round($q, 2)
            'qemu-img+sync s'  = [Math]::Round($qs, 2)
            'module s'         = [Math]::Round($o, 2)
            'ratio (synced)'   = [Math]::Round($qs / $o, 2)
            'ratio (no sync)'  = [Math]::Round($q / $o, 2)
            'qemu-img MiB'     = [Math]::Round((Get-Median $qemuKiB) / 1024)
            'module +MiB'      = [Math]::Round((Get-Median $oursKiB) / 1024)
        }
        Write-Host ("{0,-46} qemu {1,6:N2} s, +sync {2,6:N2} s, module {3,6:N2} s" -f $op.Name, $q, $qs, $o)
    }

    # --- the cold call ----------------------------------------------------------------------------------------
    $cold = $null
    if (-not $NoColdCall) {
        $exe = [Environment]::ProcessPath
        $first = [Environment]::GetCommandLineArgs()[0]
        [string[]] $pre = @(if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet' -and $first -like '*.dll') { $first })
        $module = $ModulePath -replace "'", "''"
        $scripts = [ordered]@{
            bare    = '1'
            import  = "Import-Module '$module'"
            compare = "`$env:KVMSTORAGE_ROOT = '$($root -replace "'", "''")'; Import-Module '$module'; Compare-Volume /images/input.raw /images/input.qcow2 | Out-Null"
        }
        $coldTimes = @{}
        foreach ($k in $scripts.Keys) {
            $coldTimes[$k] = Get-Median @(for ($round = 1; $round -le $Rounds; $round++) {
                    $clock = [Diagnostics.Stopwatch]::StartNew()
                    & $exe @pre -NoProfile -NonInteractive -Command $scripts[$k] | Out-Null
                    $clock.Elapsed.TotalSeconds
                })
        }
        $warm = Get-Median @(for ($round = 1; $round -le $Rounds; $round++) {
                $clock = [Diagnostics.Stopwatch]::StartNew(); Compare-Volume /images/input.raw /images/input.qcow2 | Out-Null; $clock.Elapsed.TotalSeconds
            })
        $cold = [pscustomobject]@{
            'bare pwsh s'            = [Math]::Round($coldTimes.bare, 2)
            'pwsh + import s'        = [Math]::Round($coldTimes.import, 2)
            'cold Compare-Volume s'  = [Math]::Round($coldTimes.compare, 2)
            'warm Compare-Volume s'  = [Math]::Round($warm, 2)
            "module's cold share s"  = [Math]::Round($coldTimes.compare - $coldTimes.bare - $warm, 2)
        }
    }

    # --- report -----------------------------------------------------------------------------------------------
    $kernel = (Get-Content /proc/sys/kernel/osrelease)
    Write-Host ''
    Write-Host ("{0}; {1} cores; load average at start {2}; kernel {3}; {4}; {5} GiB input, {6} MiB data, {7} MiB zeros; median of {8}" -f
        (Get-Date -Format 'yyyy-MM-dd HH:mm'), [Environment]::ProcessorCount, ($loadAtStart -join ' '), $kernel,
        (qemu-img --version | Select-Object -First 1), $SizeGB, $DataMB, $ZeroMB, $Rounds)
    $results | Format-Table -AutoSize | Out-String -Width 250 | Write-Host
    if ($cold) { $cold | Format-List | Out-String -Width 250 | Write-Host }
    if ($PassThru) {
        $results
        if ($cold) { $cold }
    }
}
finally {
    Remove-Module KvmStorage -ErrorAction SilentlyContinue
    Remove-Item -Recurse -Force $WorkFolder -ErrorAction SilentlyContinue
}
