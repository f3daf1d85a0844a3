#Requires -Version 7.4
<#
.SYNOPSIS
    The everyday job on a KVM host, start to finish, against a host root.
.DESCRIPTION
    Defines libvirt's `default` dir pool at /var/lib/libvirt/images (as libvirt ships it: built, started and
    autostarted) and shows it, then
    creates the classic 8 GiB raw kvm1.img (sparse, mode 0600) and a qcow2 beside it, and attaches kvm1.img
    to VM kvm1 as its next free virtio disk.
    Against a sandbox folder (the default of build.ps1 -Task Quickstart) nothing on the real host is touched;
    pointed at / on a real KVM host, this is the real job.
.EXAMPLE
    dotnet pwsh ./build.ps1 -Task Quickstart
.EXAMPLE
    ./examples/quickstart.ps1 -HostRoot / -ModulePath ./out/KvmStorage/0.1.0/KvmStorage.psd1
#>
param(
    [Parameter(Mandatory)] [string] $HostRoot,
    [string] $ModulePath = 'KvmStorage'
)
$ErrorActionPreference = 'Stop'
Import-Module $ModulePath
$env:KVMSTORAGE_ROOT = $HostRoot
Write-Host "Host root: $HostRoot"

# 1. The default pool, as libvirt defines it (define, build, start, autostart), unless the host already has one.
#    Offline (no libvirtd) there is nothing to start: the pool starts with libvirtd, and its volumes are files.
$pool = Get-StoragePool -Name default -ErrorAction SilentlyContinue
if (-not $pool) {
    New-StoragePool -Name default -Path /var/lib/libvirt/images -Build -Start -Autostart | Out-Null
}
elseif ($pool.State -ne 'running' -and $pool.HostName -notlike 'offline:*') {
    # A host whose libvirtd knows the pool but does not run it: libvirt creates volumes only in a running pool.
    Start-StoragePool -Name default | Out-Null
}
Get-StoragePool -Name default | Format-List

# 2. The classic 8 GiB raw disk (sparse, mode 0600) and a thin qcow2 beside it.
$pool = Get-StoragePool -Name default
foreach ($spec in @(@{ Name = 'kvm1.img'; Format = 'raw' }, @{ Name = 'kvm1-data.qcow2'; Format = 'qcow2' })) {
    if (-not (Get-Volume -Pool default -Name $spec.Name -ErrorAction SilentlyContinue)) {
        $pool | New-Volume -Name $spec.Name -Size 8GB -Format $spec.Format | Out-Null
    }
}
Get-Volume -Pool default | Format-Table
Get-Volume -Pool default -Name kvm1.img | Format-List

# 3. VM kvm1 gets kvm1.img as its next free virtio disk. In a sandbox the VM is defined from
#    examples/kvm1.xml (a small domain as libvirt writes it); on a real host it must exist already.
$domainFile = Join-Path $HostRoot 'etc/libvirt/qemu/kvm1.xml'
if (-not (Test-Path $domainFile) -and $HostRoot -ne '/') {
    New-Item -ItemType Directory -Force -Path (Split-Path $domainFile) | Out-Null
    Copy-Item (Join-Path $PSScriptRoot 'kvm1.xml') $domainFile
    chmod 600 $domainFile
}
$attached = Get-VMDisk -VMName kvm1 | Where-Object Source -EQ '/var/lib/libvirt/images/kvm1.img'
if (-not $attached) {
    Get-Volume -Pool default -Name kvm1.img | Add-VMDisk -VMName kvm1 | Format-List
}
Get-VMDisk -VMName kvm1
Get-Volume -Pool default | Format-Table Name, Format, Capacity, AttachedTo
