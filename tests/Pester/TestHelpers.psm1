# Shared by the Pester suites: a scratch host root per test, the built module, and the backend a suite runs
# against. The pool, volume and VM disk suites run twice (tests/Invoke-PesterSuite.ps1 gives them
# -Data @{ Backend = 'Offline' } and @{ Backend = 'Live' }): offline on libvirt's files under the root, live
# through a real libvirtd that the suite runner starts once (LibvirtDaemon.psm1) and passes in
# KVMSTORAGE_TEST_LIBVIRT_URI. Live, the daemon is the host: every new test root starts with no pools and no
# domains, and paths the tests write as '/srv/p' are made real folders under the root (Get-HostPath).

$script:Backend = 'Offline'
$script:CurrentRoot = $null
$script:TestConnection = $null

function Get-TestBackendSkipReason {
    <# Why a suite cannot run against this backend here, or $null. #>
    param([Parameter(Mandatory)] [ValidateSet('Offline', 'Live')] [string] $Backend)
    if ($Backend -eq 'Offline') { return $null }
    if (-not $env:KVMSTORAGE_TEST_LIBVIRT_URI) {
        $why = if ($env:KVMSTORAGE_TEST_LIBVIRT_SKIP) { $env:KVMSTORAGE_TEST_LIBVIRT_SKIP } else { 'no shared libvirtd: run the suites through tests/Invoke-PesterSuite.ps1 (build.ps1 -Task Test)' }
        return "live backend: $why"
    }
    $null
}

function Initialize-TestBackend {
    <# Called in a suite's BeforeAll: live, connects to the shared daemon and makes it the session default. #>
    param([Parameter(Mandatory)] [ValidateSet('Offline', 'Live')] [string] $Backend)
    $script:Backend = $Backend
    Get-LibvirtHost | Disconnect-LibvirtHost
    if ($Backend -eq 'Live') {
        Clear-TestLibvirtd
        $null = Connect-LibvirtHost -Uri $env:KVMSTORAGE_TEST_LIBVIRT_URI
    }
}

function Complete-TestBackend {
    <# Called in a suite's AfterAll: leaves the daemon empty and the session offline for the next suite. #>
    if ($script:Backend -eq 'Live') {
        Get-LibvirtHost | Disconnect-LibvirtHost
        Clear-TestLibvirtd
        if ($script:TestConnection) { $script:TestConnection.Dispose(); $script:TestConnection = $null }
    }
    $script:Backend = 'Offline'
}

function Test-LiveBackend { $script:Backend -eq 'Live' }

function New-TestHostRoot {
    <# Creates an empty host root under $TestDrive and makes it the session's root; live, empties the daemon. #>
    param([string] $Name = 'host')
    $root = Join-Path $TestDrive ("$Name-" + [guid]::NewGuid().ToString('N').Substring(0, 8))
    New-Item -ItemType Directory -Path $root | Out-Null
    $env:KVMSTORAGE_ROOT = $root
    $script:CurrentRoot = $root
    if ($script:Backend -eq 'Live') { Clear-TestLibvirtd }
    $root
}

function Get-HostPath {
    <#
    A path as the host sees it, for a path the tests write as on a host root ('/srv/p'): offline the same (the
    module resolves it under the root); live the real folder under the test root, which the daemon sees as is.
    Either way the file is at Join-Path $root 'srv/p'.
    #>
    param([Parameter(Mandatory)] [string] $Path, [string] $Root = $script:CurrentRoot)
    if ($script:Backend -eq 'Live') { return $Root.TrimEnd('/') + $Path }
    $Path
}

function Invoke-TestVirsh {
    <# virsh on the shared daemon; throws with its output when it fails. #>
    $out = & virsh -q -c $env:KVMSTORAGE_TEST_LIBVIRT_URI @args 2>&1
    if ($LASTEXITCODE) { throw "virsh $args failed: $out" }
    @($out | ForEach-Object { "$_".TrimEnd() } | Where-Object { $_ })
}

function Get-TestLibvirtConnection {
    # Listing and emptying the daemon between tests goes through the module's libvirt layer in-process (a virsh
    # process costs ~0.1 s); what the tests assert is still read with virsh.
    if (-not $script:TestConnection -or -not $script:TestConnection.IsAlive) {
        $script:TestConnection = [KvmStorage.Core.Libvirt.LibvirtConnection]::Open($env:KVMSTORAGE_TEST_LIBVIRT_URI)
    }
    $script:TestConnection
}

function Get-TestVirshLists {
    # All pools, active pools, all domains, running domains.
    $c = Get-TestLibvirtConnection
    $pools = @($c.ListPools() | Sort-Object Name)
    $domains = @($c.ListDomains() | Sort-Object Name)
    try {
        [pscustomobject]@{
            Pools       = @($pools | ForEach-Object Name)
            ActivePools = @($pools | Where-Object { $_.GetInfo().State -ne 0 } | ForEach-Object Name)
            Domains     = @($domains | ForEach-Object Name)
            Running     = @($domains | Where-Object IsActive | ForEach-Object Name)
        }
    }
    finally { @($pools) + @($domains) | ForEach-Object { $_.Dispose() } }
}

function Add-TestLibvirtDomain {
    <# Defines a domain in the shared daemon from an XML file (set-up, not an assertion: in-process, no virsh). #>
    param([Parameter(Mandatory)] [string[]] $Path)
    foreach ($p in $Path) { (Get-TestLibvirtConnection).DefineDomain((Get-Content -Raw $p), $true, $p).Dispose() }
}

function Clear-TestLibvirtd {
    <# Stops and undefines every domain and pool of the shared daemon (data in the pools' folders stays). #>
    $l = Get-TestVirshLists
    $commands = @(
        $l.Running | ForEach-Object { "destroy '$_'" }
        $l.Domains | ForEach-Object { "undefine '$_'" }
    )
    if ($commands) { $null = Invoke-TestVirsh ($commands -join '; ') }
    $c = Get-TestLibvirtConnection
    foreach ($name in $l.Pools) {
        $pool = $c.LookupPool($name)
        try {
            if ($name -in $l.ActivePools) { $pool.Stop() }
            $pool.Undefine()
        }
        finally { $pool.Dispose() }
    }
}

function Get-HostSnapshot {
    <#
    Get-TreeSnapshot of the root and, live, what the daemon holds: its pools (inactive XML without the space
    figures, autostart, state), their volumes, and its domains' persistent and live XML. Compare two to prove a
    command changed nothing anywhere.
    #>
    param([string] $Path = $script:CurrentRoot)
    Get-TreeSnapshot $Path
    if ($script:Backend -ne 'Live') { return }
    $l = Get-TestVirshLists
    $commands = @(
        foreach ($p in $l.Pools) { "echo pool $p; pool-dumpxml --inactive '$p'; pool-info '$p'" }
        foreach ($p in $l.ActivePools) { "echo volumes $p; vol-list '$p'" }
        foreach ($d in $l.Domains) { "echo domain $d; dumpxml --inactive '$d'" }
        foreach ($d in $l.Running) { "echo live $d; dumpxml '$d'" }
    )
    "pools: $($l.Pools -join ',') active: $($l.ActivePools -join ',') domains: $($l.Domains -join ',') running: $($l.Running -join ',')"
    if ($commands) {
        Invoke-TestVirsh ($commands -join '; ') | Where-Object { $_ -notmatch '^\s*<(capacity|allocation|available)\b|^(Capacity|Allocation|Available):' }
    }
}

function Get-TreeSnapshot {
    <# Every file under a folder with its length, mode, link target and content hash (for large, mostly sparse
       images: the modification time instead): compare two snapshots to prove nothing changed. #>
    param([Parameter(Mandatory)] [string] $Path)
    if (-not (Test-Path $Path)) { return @() }
    Get-ChildItem -LiteralPath $Path -Recurse -Force | Sort-Object FullName | ForEach-Object {
        # Lock files are empty; a child process being forked elsewhere may briefly hold their lock.
        $hash = if ($_.PSIsContainer -or $_.LinkTarget -or $_.Name -like '*.lock') { '' }
        elseif ($_.Length -le 16MB) { (Get-FileHash -LiteralPath $_.FullName -Algorithm SHA256).Hash }
        else { $_.LastWriteTimeUtc.Ticks }
        '{0}|{1}|{2}|{3}|{4}' -f $_.FullName.Substring($Path.Length), $_.UnixMode, $(if ($_.PSIsContainer) { 'd' } else { $_.Length }), $_.LinkTarget, $hash
    }
}

function Read-BE {
    <# A big-endian unsigned integer of $Size bytes at $Offset of a file (qcow2 header and table fields). #>
    param([string] $Path, [long] $Offset, [int] $Size)
    $fs = [IO.File]::OpenRead($Path)
    try { $b = [byte[]]::new($Size); $fs.Position = $Offset; [void]$fs.Read($b, 0, $Size) } finally { $fs.Dispose() }
    [ulong] $v = 0; foreach ($x in $b) { $v = ($v -shl 8) -bor $x }; $v
}

function Write-BE {
    <# Writes a big-endian 64-bit value at $Offset of a file (to craft qcow2 table entries). #>
    param([string] $Path, [long] $Offset, [ulong] $Value)
    $b = [BitConverter]::GetBytes($Value); [Array]::Reverse($b)
    $fs = [IO.File]::Open($Path, 'Open', 'ReadWrite')
    try { $fs.Position = $Offset; $fs.Write($b, 0, 8) } finally { $fs.Dispose() }
}

Export-ModuleMember -Function New-TestHostRoot, Read-BE, Write-BE, Get-TreeSnapshot, Get-HostSnapshot, Get-HostPath, Test-LiveBackend, `
    Get-TestBackendSkipReason, Initialize-TestBackend, Complete-TestBackend, Invoke-TestVirsh, Clear-TestLibvirtd, Add-TestLibvirtDomain
