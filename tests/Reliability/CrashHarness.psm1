# Crash-safety harness: runs a mutating operation in a child pwsh, kills it with SIGKILL at a seeded random
# moment within the operation's measured duration, then checks what is left on disk and that the same command
# runs again. The operations are the table in CrashOperations.ps1.

$script:TempPrefix = '.kvmstorage-tmp-'

function Get-PwshCommand {
    # The tests run under 'dotnet pwsh' (pwsh.dll) or a pwsh binary: start the child the same way.
    $exe = [Environment]::ProcessPath
    $first = [Environment]::GetCommandLineArgs()[0]
    if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet' -and $first -like '*.dll') { return $exe, @($first) }
    return $exe, @()
}

function Start-CrashChild {
    <# Starts a child pwsh that imports the module, says READY and waits for its host root on stdin (see
       Send-CrashRoot): a child is started ahead of its trial, so its start-up overlaps the previous trial's checks
       and the kill delay counts from the moment the command starts. #>
    param([string] $Command, [string] $Module, [string] $ScriptFolder)
    $script = Join-Path $ScriptFolder ("child-" + [guid]::NewGuid().ToString('N') + '.ps1')
    @"
`$ErrorActionPreference = 'Stop'
Import-Module '$($Module -replace "'", "''")'
[Console]::Out.WriteLine('READY'); [Console]::Out.Flush()
`$env:KVMSTORAGE_ROOT = [Console]::In.ReadLine()
if (-not `$env:KVMSTORAGE_ROOT) { exit 0 }
[Console]::Out.WriteLine('GO'); [Console]::Out.Flush()
$Command
[Console]::Out.WriteLine('DONE'); [Console]::Out.Flush()
"@ | Set-Content -LiteralPath $script
    $exe, $prefix = Get-PwshCommand
    $psi = [Diagnostics.ProcessStartInfo]::new($exe)
    foreach ($a in @($prefix) + @('-NoProfile', '-NonInteractive', '-File', $script)) { $psi.ArgumentList.Add($a) }
    $psi.RedirectStandardInput = $true
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    $psi.UseShellExecute = $false
    [void]$psi.Environment.Remove('KVMSTORAGE_ROOT')
    $p = [Diagnostics.Process]::Start($psi)
    # Output is read with pending ReadLineAsync tasks polled by Update-ChildLines, not with PowerShell events: an
    # event action only runs at the pipeline's next safe point, so after a Start-Sleep the lines (DONE) would lag.
    [pscustomobject]@{
        Process = $p
        Lines   = [Collections.Generic.List[string]]::new()
        Pending = $p.StandardOutput.ReadLineAsync()
        Errors  = $p.StandardError.ReadToEndAsync()
        Script  = $script
    }
}

function Update-ChildLines($Child) {
    while ($Child.Pending -and $Child.Pending.IsCompleted) {
        $line = if ($Child.Pending.IsCompletedSuccessfully) { $Child.Pending.Result }
        if ($null -eq $line) { $Child.Pending = $null; break }
        $Child.Lines.Add($line)
        $Child.Pending = $Child.Process.StandardOutput.ReadLineAsync()
    }
}

function Get-ChildErrors($Child) {
    if ($Child.Errors.IsCompletedSuccessfully) { $Child.Errors.Result.Trim() } else { '' }
}

function Send-CrashRoot {
    <# Waits until the child is READY, hands it its host root and returns once the command has started. #>
    param($Child, [string] $Root)
    if (-not (Wait-ChildLine $Child 'READY' 300)) { return $false }
    $Child.Process.StandardInput.WriteLine($Root)
    $Child.Process.StandardInput.Flush()
    Wait-ChildLine $Child 'GO' 60
}

function Wait-ChildLine {
    param($Child, [string] $Line, [int] $TimeoutSeconds)
    $sw = [Diagnostics.Stopwatch]::StartNew()
    while ($sw.Elapsed.TotalSeconds -lt $TimeoutSeconds) {
        Update-ChildLines $Child
        if ($Child.Lines.Contains($Line)) { return $true }
        if ($Child.Process.HasExited) { Start-Sleep -Milliseconds 100; Update-ChildLines $Child; return $Child.Lines.Contains($Line) }
        Start-Sleep -Milliseconds 5
    }
    $false
}

function Stop-CrashChild($Child) {
    if (-not $Child.Process.HasExited) { $Child.Process.Kill() }   # SIGKILL on Linux
    $Child.Process.WaitForExit()
    $null = $Child.Errors.Wait(5000)
    Remove-Item -LiteralPath $Child.Script -ErrorAction SilentlyContinue
}

function Test-HostConsistency {
    <# Every problem on a host root after a crash, as strings: images, definitions, temporaries, listings. #>
    param([string] $Root, [bool] $AllowLeaks, [bool] $AllowStaleCopied, [switch] $NoTempAllowed)
    $problems = [Collections.Generic.List[string]]::new()
    $xmllint = [bool](Get-Command xmllint -ErrorAction SilentlyContinue) -and (Test-Path /usr/share/libvirt/schemas/storagepool.rng)
    $qemuImg = [bool](Get-Command qemu-img -ErrorAction SilentlyContinue)
    foreach ($kind in @(@{ Dir = 'etc/libvirt/storage'; Schema = 'storagepool' }, @{ Dir = 'etc/libvirt/qemu'; Schema = 'domain' })) {
        $dir = Join-Path $Root $kind.Dir
        if (-not (Test-Path $dir)) { continue }
        $parsed = [Collections.Generic.List[string]]::new()
        foreach ($f in Get-ChildItem -LiteralPath $dir -Filter *.xml -File) {
            try { $null = [xml](Get-Content -Raw -LiteralPath $f.FullName); $parsed.Add($f.FullName) } catch { $problems.Add("$($f.Name) does not parse: $_") }
        }
        if ($xmllint -and $parsed.Count) {
            # What virt-xml-validate runs (xmllint --relaxng with libvirt's schema), one process for all the files.
            $out = @(& xmllint --noout --relaxng "/usr/share/libvirt/schemas/$($kind.Schema).rng" @parsed 2>&1 | ForEach-Object { "$_" })
            foreach ($file in $parsed) {
                if ("$file validates" -notin $out) {
                    $problems.Add("$([IO.Path]::GetFileName($file)) fails the $($kind.Schema) schema: $(($out | Where-Object { $_.StartsWith($file) }) -join ' ')")
                }
            }
        }
        if ($NoTempAllowed) {
            foreach ($t in Get-ChildItem -LiteralPath $dir -Force -File | Where-Object Name -like "$TempPrefix*") {
                if ($t.LastWriteTimeUtc -lt [datetime]::UtcNow.AddMinutes(-10)) { $problems.Add("stale temporary $($t.Name) in $($kind.Dir)") }
            }
        }
    }
    $pools = @(Get-StoragePool -ErrorVariable poolErrors -ErrorAction SilentlyContinue)
    foreach ($e in $poolErrors) { $problems.Add("Get-StoragePool: $e") }
    foreach ($vm in Get-ChildItem -LiteralPath (Join-Path $Root 'etc/libvirt/qemu') -Filter *.xml -File -ErrorAction SilentlyContinue) {
        $null = Get-VMDisk -VMName $vm.BaseName -ErrorVariable diskErrors -ErrorAction SilentlyContinue
        foreach ($e in $diskErrors) { $problems.Add("Get-VMDisk $($vm.BaseName): $e") }
    }
    foreach ($pool in $pools) {
        if (-not $pool.LocalPath -or -not (Test-Path -LiteralPath $pool.LocalPath)) { continue }
        $null = Get-Volume -Pool $pool.Name -ErrorVariable volErrors -ErrorAction SilentlyContinue
        foreach ($e in $volErrors) { $problems.Add("Get-Volume -Pool $($pool.Name): $e") }
        foreach ($f in Get-ChildItem -LiteralPath $pool.LocalPath -Force -File) {
            if ($f.Name.StartsWith($TempPrefix)) {
                if ($NoTempAllowed) { $problems.Add("temporary $($f.Name) was not recovered") }
                continue
            }
            if ($qemuImg -and (Test-Qcow2Magic $f.FullName)) {
                $out = & qemu-img check --output=json $f.FullName 2>&1
                $code = $LASTEXITCODE
                # A kill between raising refcounts and clearing COPIED flags (snapshot create, as in qemu) leaves
                # refcount 2 with COPIED still set: qemu-img check counts it as corruption, yet it is only a leak
                # (one reference) that the leak repair makes whole. Anything else stays a failure.
                $errors = @($out | ForEach-Object { "$_" } | Where-Object { $_ -match '^ERROR' })
                $staleCopiedOnly = $AllowStaleCopied -and $code -eq 2 -and $errors.Count -gt 0 -and
                    -not ($errors | Where-Object { $_.Trim() -notmatch '^ERROR OFLAG_COPIED (data cluster: l2_entry|L2 cluster: l1_index=\d+ l1_entry)=8[0-9a-f]{15} refcount=([2-9]|\d{2,})$' })
                if (($code -eq 3 -and $AllowLeaks) -or $staleCopiedOnly) {
                    # Leaks are allowed by design here, and then Test-Volume -Repair Leaks must reclaim them: repair a
                    # copy (the re-run works on the image as the crash left it) and check the copy is clean. The copy
                    # lies beside the image so that a relative backing file name still resolves.
                    $copy = Join-Path $f.DirectoryName ('.leakcheck-' + [guid]::NewGuid().ToString('N') + '.qcow2')
                    & cp --sparse=always -- $f.FullName $copy
                    try {
                        $null = Test-Volume -LiteralPath $copy -Repair Leaks -Confirm:$false -ErrorVariable repairErrors -ErrorAction SilentlyContinue
                        foreach ($e in $repairErrors) { $problems.Add("Test-Volume -Repair Leaks $($f.Name): $e") }
                        $after = & qemu-img check --output=json $copy 2>&1
                        if ($LASTEXITCODE -ne 0) { $problems.Add("$($f.Name) after Test-Volume -Repair Leaks: qemu-img check exit $LASTEXITCODE`: $(Get-CheckDigest $after)") }
                    }
                    finally { Remove-Item -LiteralPath $copy -Force -ErrorAction SilentlyContinue }
                }
                elseif ($code -ne 0) { $problems.Add("qemu-img check $($f.Name) exit $code`: $(Get-CheckDigest $out)") }
            }
        }
    }
    $problems
}

function Write-CrashTestData {
    <# A sparse file of Size bytes holding DataSize bytes of base64 text (compresses to about 3/4, like real data
       more than a fill pattern does) in 1 MiB runs spread over it, the same for the same Seed. #>
    param([string] $Path, [long] $Size, [long] $DataSize, [int] $Seed = 1)
    $rng = [Random]::new($Seed)
    $raw = [byte[]]::new(768KB)   # 1 MiB of base64
    $runs = [Math]::Max(1, [long]($DataSize / 1MB))
    $stride = [long]([Math]::Floor($Size / $runs / 1MB)) * 1MB
    $fs = [IO.File]::Create($Path)
    try {
        $fs.SetLength($Size)
        for ($i = 0; $i -lt $runs; $i++) {
            $rng.NextBytes($raw)
            $fs.Position = $i * $stride
            $fs.Write([Text.Encoding]::ASCII.GetBytes([Convert]::ToBase64String($raw)))
        }
    }
    finally { $fs.Dispose() }
}

function Test-ImagePattern {
    <# True when every read of Reads ('<pattern> <offset> <length>', qemu-io read -P syntax) verifies on the image. #>
    param([string] $Path, [string[]] $Reads)
    $format = if (Test-Qcow2Magic $Path) { 'qcow2' } else { 'raw' }
    $arguments = @('-r', '-U', '-f', $format) + @($Reads | ForEach-Object { '-c', "read -P $_" }) + @($Path)
    $out = & qemu-io @arguments 2>&1 | Out-String
    $LASTEXITCODE -eq 0 -and $out -notmatch 'verification failed|error|failed' -and ([regex]::Matches($out, 'read \d+/\d+ bytes').Count -eq $Reads.Count)
}

function Compare-CrashImage {
    <# qemu-img compare of two images (formats given, never probed); returns the problem text or nothing. #>
    param([string] $First, [string] $Second)
    $formats = foreach ($f in $First, $Second) { if (Test-Qcow2Magic $f) { 'qcow2' } elseif ($f -like '*.vmdk') { 'vmdk' } else { 'raw' } }
    $out = & qemu-img compare -U -f $formats[0] -F $formats[1] $First $Second 2>&1 | Out-String
    if ($LASTEXITCODE -ne 0) { "qemu-img compare $([IO.Path]::GetFileName($First)) $([IO.Path]::GetFileName($Second)) exit $LASTEXITCODE`: $($out.Trim())" }
}

function Get-CheckDigest($Output) {
    # qemu-img check prints a line per bad cluster: keep the counts and the first few lines of each kind.
    $lines = @($Output | ForEach-Object { "$_" } | Where-Object { $_ })
    $kinds = $lines | Where-Object { $_ -match '^(ERROR|Leaked|Warning)' } | Group-Object { ($_ -split ':')[0] -replace '\d+', 'N' }
    $json = ($lines | Where-Object { $_ -match '"(corruptions|leaks|check-errors)"' }) -join ' '
    (@($kinds | ForEach-Object { "$($_.Count) x $($_.Group[0])" }) + $json) -join ' | '
}

function Test-Qcow2Magic([string] $Path) {
    $s = [IO.File]::OpenRead($Path)
    try { $b = [byte[]]::new(4); $n = $s.Read($b, 0, 4); $n -eq 4 -and $b[0] -eq 0x51 -and $b[1] -eq 0x46 -and $b[2] -eq 0x49 -and $b[3] -eq 0xfb }
    finally { $s.Dispose() }
}

function Invoke-CrashTrial {
    <#
    .SYNOPSIS
        Runs each operation class Trials times under SIGKILL and returns one result per trial.
    .DESCRIPTION
        Per class: the Setup runs once into a template root, and each trial works on a copy of it (cp -a, sparse;
        FreshSetup = $true in the table runs Setup per trial instead). One uninterrupted run (trial 0) measures the
        command's duration; each trial then kills the command at a random moment in [0, 1.1 x duration). The
        random sequence of a class depends only on Seed and the class name, so a class can be re-run alone.
    .PARAMETER Operation
        Class names from CrashOperations.ps1; all by default.
    #>
    param(
        [Parameter(Mandatory)] [string] $Module,
        [Parameter(Mandatory)] [string] $WorkFolder,
        [int] $Trials = 5,
        [int] $Seed = 20261125,
        [string[]] $Operation
    )
    $table = & (Join-Path $PSScriptRoot 'CrashOperations.ps1')
    if ($Operation) { $table = @($table | Where-Object { $_.Name -in $Operation }) }
    $savedRoot = $env:KVMSTORAGE_ROOT
    $next = $null
    try {
        foreach ($op in $table) {
            $random = [Random]::new($Seed + ($op.Name.ToCharArray() | ForEach-Object { [int]$_ } | Measure-Object -Sum).Sum)
            $template = if (-not $op.FreshSetup) { New-CrashRoot $WorkFolder $op 'template' }
            $next = Start-CrashChild -Command $op.Command -Module $Module -ScriptFolder $WorkFolder
            $duration = 0.0
            for ($t = 0; $t -le $Trials; $t++) {
                $root = if ($template) { Copy-CrashRoot $WorkFolder $op $template } else { New-CrashRoot $WorkFolder $op 'trial' }
                $child = $next
                $next = $null
                $problems = [Collections.Generic.List[string]]::new()
                $started = Send-CrashRoot $child $root
                if (-not $started) { Stop-CrashChild $child; $problems.Add('the child never started the command: ' + (Get-ChildErrors $child)) }
                if ($t -eq 0) {
                    # Calibration: one uninterrupted run gives the operation's typical duration on this machine.
                    $sw = [Diagnostics.Stopwatch]::StartNew()
                    $completed = Wait-ChildLine $child 'DONE' 600
                    $duration = $sw.Elapsed.TotalMilliseconds
                    $delay = -1
                    if (-not $completed) { Stop-CrashChild $child; $problems.Add("the uninterrupted run did not finish: $(Get-ChildErrors $child)") }
                }
                else {
                    $delay = [int]($random.NextDouble() * $duration * 1.1)
                    Start-Sleep -Milliseconds $delay
                    # Finished before the kill: it said DONE, or it has already exited by itself.
                    Update-ChildLines $child
                    $completed = $child.Lines.Contains('DONE') -or $child.Process.HasExited
                }
                Stop-CrashChild $child
                # The next trial's child starts now, so its start-up overlaps this trial's checks.
                if ($t -lt $Trials) { $next = Start-CrashChild -Command $op.Command -Module $Module -ScriptFolder $WorkFolder }
                $env:KVMSTORAGE_ROOT = $root
                $phase = if ($t -eq 0) { 'after the run' } else { 'after the kill' }
                foreach ($p in @(Test-HostConsistency -Root $root -AllowLeaks ([bool]$op.AllowLeaks) -AllowStaleCopied ([bool]$op.AllowStaleCopied)) + @(& $op.Check $root)) { if ($p) { $problems.Add("$phase`: $p") } }

                if ($t -gt 0) {
                    # The next run of the same command succeeds (or reports that the killed run had finished).
                    try {
                        $null = & ([scriptblock]::Create($op.Command)) -ErrorAction Stop 2>&1 | Where-Object { $_ -is [Management.Automation.ErrorRecord] } | ForEach-Object { throw $_ }
                    }
                    catch {
                        $id = "$($_.FullyQualifiedErrorId)".Split(',')[0]
                        if ($id -notin @($op.DoneErrorIds)) { $problems.Add("the re-run failed: [$($_.FullyQualifiedErrorId)] $_") }
                    }
                    foreach ($p in @(Test-HostConsistency -Root $root -AllowLeaks ([bool]$op.AllowLeaks) -AllowStaleCopied ([bool]$op.AllowStaleCopied) -NoTempAllowed) + @(& $op.Check $root)) { if ($p) { $problems.Add("after the re-run: $p") } }
                }
                [pscustomobject]@{ Operation = $op.Name; Trial = $t; DelayMs = $delay; DurationMs = [int]$duration; Completed = $completed; Problems = @($problems) }
                Remove-Item -Recurse -Force $root
            }
            if ($template) { Remove-Item -Recurse -Force $template }
        }
    }
    finally {
        if ($next) { Stop-CrashChild $next }
        $env:KVMSTORAGE_ROOT = $savedRoot
    }
}

function New-CrashRoot([string] $WorkFolder, $Op, [string] $Kind) {
    $root = Join-Path $WorkFolder ("$($Op.Name)-$Kind-" + [guid]::NewGuid().ToString('N').Substring(0, 8))
    New-Item -ItemType Directory -Path $root | Out-Null
    $env:KVMSTORAGE_ROOT = $root
    & $Op.Setup $root
    $root
}

function Copy-CrashRoot([string] $WorkFolder, $Op, [string] $Template) {
    $root = Join-Path $WorkFolder ("$($Op.Name)-trial-" + [guid]::NewGuid().ToString('N').Substring(0, 8))
    & cp -a --sparse=always -- $Template $root
    if ($LASTEXITCODE -ne 0) { throw "cp of the template root $Template failed" }
    $root
}

Export-ModuleMember -Function Invoke-CrashTrial, Test-HostConsistency, Write-CrashTestData, Test-ImagePattern, Compare-CrashImage, Test-Qcow2Magic
