#Requires -Version 7.4
# A private libvirtd for the Daemon-tagged tests: started in its own mount namespace with
# scratch folders bound over /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt,
# so it touches none of the machine's libvirt state. The scratch folder is laid out as a KvmStorage host root
# (<root>/etc/libvirt/storage, ...), so the offline backend and the daemon read the same files.

function Get-TestLibvirtdSkipReason {
    <# Why the daemon tests cannot run here, or $null. #>
    param([switch] $NeedEmulator, [switch] $NeedSasl, [string[]] $NeedStorageBackend = @())
    if (-not $IsLinux) { return 'libvirtd tests need Linux' }
    if ((& id -u) -ne '0') { return 'libvirtd tests need root (a private mount namespace and the system daemon)' }
    if (-not (Test-Path /usr/sbin/libvirtd)) { return 'libvirtd is not installed (package libvirt-daemon-system)' }
    if (-not (Get-Command virsh -ErrorAction SilentlyContinue)) { return 'virsh is not installed (package libvirt-clients)' }
    if (-not (Get-Command unshare -ErrorAction SilentlyContinue)) { return 'unshare is not installed (package util-linux)' }
    if ($NeedEmulator -and -not (Test-Path /usr/bin/qemu-system-x86_64)) { return 'qemu-system-x86_64 is not installed (package qemu-system-x86)' }
    if ($NeedSasl -and -not (Get-Command saslpasswd2 -ErrorAction SilentlyContinue)) { return 'saslpasswd2 is not installed (package sasl2-bin)' }
    if ($NeedSasl -and -not (Get-ChildItem /usr/lib/*/sasl2/libdigestmd5.so* -ErrorAction SilentlyContinue)) { return 'the DIGEST-MD5 SASL plugin is not installed (package libsasl2-modules)' }
    foreach ($backend in $NeedStorageBackend) {
        if (-not (Get-ChildItem "/usr/lib/*/libvirt/storage-backend/libvirt_storage_backend_$backend.so" -ErrorAction SilentlyContinue)) {
            return "libvirt's $backend storage backend is not installed (package libvirt-daemon-driver-storage-$backend)"
        }
    }
    $null
}

function Get-FreeTcpPort {
    $listener = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, 0)
    $listener.Start()
    try { $listener.LocalEndpoint.Port } finally { $listener.Stop() }
}

function Start-TestLibvirtd {
    <#
    .SYNOPSIS
        Starts libvirtd on a scratch host root and waits until it answers. Returns Root, Uri, TcpUri, Pid.
    .PARAMETER Root
        The host root; created when missing. Files already under <Root>/etc/libvirt are what the daemon loads.
    .PARAMETER ListenTcp
        Also listen on 127.0.0.1 (only) without authentication, for a qemu+tcp:// test.
    .PARAMETER Sasl
        With -ListenTcp: the TCP listener asks for SASL (DIGEST-MD5, which also encrypts) against a private sasldb
        holding one user; the result carries SaslUser and SaslPassword. /etc/sasl2 is a scratch folder in the
        daemon's namespace too.
    #>
    param(
        [Parameter(Mandatory)] [string] $Root,
        [switch] $ListenTcp,
        [switch] $Sasl
    )
    $etc = Join-Path $Root 'etc/libvirt'
    $run = Join-Path $Root 'run/libvirt'
    $lib = Join-Path $Root 'var/lib/libvirt'
    $log = Join-Path $Root 'var/log/libvirt'
    $cache = Join-Path $Root 'var/cache/libvirt'
    foreach ($d in $etc, $run, $lib, $log, $cache, "$etc/storage/autostart", "$etc/qemu/autostart", "$lib/qemu", "$lib/images") {
        New-Item -ItemType Directory -Force -Path $d | Out-Null
    }
    foreach ($conf in Get-ChildItem /etc/libvirt -Filter *.conf -File) {
        $dest = Join-Path $etc $conf.Name
        if (-not (Test-Path $dest)) { Copy-Item $conf.FullName $dest }
    }
    # Domains run as root without a security driver or virtlogd: nothing outside the scratch root is touched.
    Add-Content -Path "$etc/qemu.conf" -Value "`nuser = `"root`"`ngroup = `"root`"`nsecurity_driver = `"none`"`nstdio_handler = `"file`"`n"
    $port = $null
    $listen = ''
    $saslDir = Join-Path $Root 'etc/sasl2'
    $saslUser = $null
    $saslPassword = $null
    if ($ListenTcp) {
        $port = Get-FreeTcpPort
        $auth = if ($Sasl) { 'sasl' } else { 'none' }
        Add-Content -Path "$etc/libvirtd.conf" -Value "`nlisten_tls = 0`nlisten_tcp = 1`nlisten_addr = `"127.0.0.1`"`ntcp_port = `"$port`"`nauth_tcp = `"$auth`"`n"
        $listen = '--listen'
    }
    if ($Sasl) {
        New-Item -ItemType Directory -Force -Path $saslDir | Out-Null
        Set-Content -Path "$saslDir/libvirt.conf" -Value "mech_list: digest-md5`nsasldb_path: $saslDir/passwd.db`n"
        $saslUser = 'kvmtest'
        $saslPassword = [guid]::NewGuid().ToString('N')
        $saslPassword | & saslpasswd2 -p -a libvirt -f "$saslDir/passwd.db" -c $saslUser
        if ($LASTEXITCODE) { throw "saslpasswd2 failed ($LASTEXITCODE)" }
    }
    foreach ($mountPoint in '/run/libvirt', '/var/lib/libvirt', '/var/log/libvirt', '/var/cache/libvirt') {
        New-Item -ItemType Directory -Force -Path $mountPoint | Out-Null
    }

    $pidFile = Join-Path $Root 'libvirtd.pid'
    $binds = @(
        "mount --bind '$etc' /etc/libvirt"
        "mount --bind '$run' /run/libvirt"
        "mount --bind '$lib' /var/lib/libvirt"
        "mount --bind '$log' /var/log/libvirt"
        "mount --bind '$cache' /var/cache/libvirt"
        if ($Sasl) { "mount --bind '$saslDir' /etc/sasl2" }
        "exec /usr/sbin/libvirtd $listen --pid-file '$pidFile'"
    ) -join ' && '
    $daemonLog = Join-Path $Root 'libvirtd.log'
    & setsid -f unshare --mount --propagation private -- sh -c "$binds > '$daemonLog' 2>&1 < /dev/null"

    $uri = "qemu:///system?socket=$run/libvirt-sock"
    $deadline = [DateTime]::UtcNow.AddSeconds(30)
    while ($true) {
        if ((Test-Path "$run/libvirt-sock") -and (Test-Path $pidFile)) {
            & virsh -c $uri version *> $null
            if ($LASTEXITCODE -eq 0) { break }
        }
        if ([DateTime]::UtcNow -gt $deadline) {
            $text = if (Test-Path $daemonLog) { Get-Content -Raw $daemonLog } else { '(no log)' }
            throw "libvirtd did not answer on $uri within 30 s: $text"
        }
        Start-Sleep -Milliseconds 200
    }

    [pscustomobject]@{
        Root    = $Root
        Uri     = $uri
        TcpUri  = if ($port) { "qemu+tcp://127.0.0.1:$port/system" } else { $null }
        SaslUser     = $saslUser
        SaslPassword = $saslPassword
        Pid     = [int](Get-Content -Raw $pidFile).Trim()
        PidFile = $pidFile
        Log     = $daemonLog
    }
}

function Stop-TestLibvirtd {
    <# Stops the VMs the daemon runs, then the daemon itself, by its PID. #>
    param([Parameter(Mandatory)] $Daemon)
    if (-not $Daemon) { return }
    $names = @(& virsh -c $Daemon.Uri list --name 2>$null | Where-Object { $_ })
    foreach ($name in $names) { & virsh -c $Daemon.Uri destroy $name *> $null }
    $process = Get-Process -Id $Daemon.Pid -ErrorAction SilentlyContinue
    if ($process) {
        & kill -TERM $Daemon.Pid
        if (-not $process.WaitForExit(15000)) { & kill -KILL $Daemon.Pid }
    }
}

Export-ModuleMember -Function Get-TestLibvirtdSkipReason, Start-TestLibvirtd, Stop-TestLibvirtd
