# The operation classes of the crash-safety harness: one hashtable per class. To cover a new mutating
# operation (Convert-Volume, Copy-Volume, snapshots, ...) add one entry:
#   Name         the class name (used by -Operation and in reports)
#   Setup        { param($Root) } prepares the sandbox host root (module imported, KVMSTORAGE_ROOT set)
#   Command      the PowerShell text the child process runs and that is killed with SIGKILL; it is run again
#                after the kill ("the next run succeeds"), so write it to be re-runnable (loops skip what exists)
#   Check        { param($Root) } returns a string per problem in the operation's own outcome (the harness
#                already checks every image with qemu-img check, every pool/domain file with virt-xml-validate,
#                that Get-StoragePool/Get-Volume/Get-VMDisk read without errors, and that no temporary is left)
#   DoneErrorIds error ids the re-run may answer when the killed run had finished its work (VolumeAlreadyExists)
#   AllowLeaks   $true when a crash may leak qcow2 clusters by design (qemu-img check exit code 3)
@(
    @{
        Name     = 'NewVolumeRawFull'
        Setup    = { param($Root) New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null }
        Command  = 'New-Volume -Pool default -Name big.img -Size 192MB -Format raw -Preallocation Full | Out-Null'
        DoneErrorIds = @('VolumeAlreadyExists')
        Check    = {
            param($Root)
            $file = Join-Path $Root 'var/lib/libvirt/images/big.img'
            if (Test-Path -LiteralPath $file) {
                $v = Get-Volume -Pool default -Name big.img
                if ($v.FileLength -ne 192MB) { "big.img carries its final name with $($v.FileLength) of 192 MiB written" }
                if ($v.Allocation -lt 192MB) { "big.img carries its final name but only $($v.Allocation) bytes are allocated" }
            }
        }
    }
    @{
        Name     = 'NewVolumeQcow2Full'
        Setup    = { param($Root) New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null }
        Command  = 'New-Volume -Pool default -Name big.qcow2 -Size 192MB -Format qcow2 -Preallocation Full | Out-Null'
        DoneErrorIds = @('VolumeAlreadyExists')
        Check    = {
            param($Root)
            if (Test-Path -LiteralPath (Join-Path $Root 'var/lib/libvirt/images/big.qcow2')) {
                $v = Get-Volume -Pool default -Name big.qcow2
                if ($v.Capacity -ne 192MB) { "big.qcow2 has capacity $($v.Capacity)" }
                if ($v.Allocation -lt 192MB) { "big.qcow2 carries its final name but only $($v.Allocation) bytes are allocated" }
            }
        }
    }
    @{
        # 512-byte clusters: 1 GiB needs a 256 KiB L1 table, 48 GiB a 12 MiB one, so the grow relocates the L1.
        Name       = 'ResizeVolumeQcow2L1'
        Setup      = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            New-Volume -Pool default -Name grow.qcow2 -Size 1GB -ClusterSize 512 | Out-Null
        }
        Command    = 'Resize-Volume -Pool default -Name grow.qcow2 -Size 48GB'
        AllowLeaks = $true
        Check      = {
            param($Root)
            $v = Get-Volume -Pool default -Name grow.qcow2
            if ($v.Capacity -notin 1GB, 48GB) { "grow.qcow2 has capacity $($v.Capacity), neither the old nor the new size" }
        }
    }
    @{
        Name    = 'ResizeVolumeRawFull'
        Setup   = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            New-Volume -Pool default -Name grow.img -Size 16MB -Format raw | Out-Null
        }
        Command = 'Resize-Volume -Pool default -Name grow.img -Size 192MB -Preallocation Full'
        Check   = {
            param($Root)
            $v = Get-Volume -Pool default -Name grow.img
            if ($v.Capacity -notin 16MB, 192MB) { "grow.img has size $($v.Capacity), neither the old nor the new size" }
        }
    }
    @{
        Name    = 'NewStoragePoolLoop'
        Setup   = { param($Root) }
        Command = 'foreach ($i in 1..10) { if (-not (Get-StoragePool -Name "p$i" -ErrorAction SilentlyContinue)) { New-StoragePool -Name "p$i" -Path "/srv/pools/p$i" -Build | Out-Null } }'
        Check   = {
            param($Root)
            foreach ($p in Get-StoragePool) {
                if ($p.Name -notmatch '^p\d+$') { "unexpected pool '$($p.Name)'" }
            }
        }
    }
    @{
        Name    = 'AddVMDiskLoop'
        Setup   = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            $qemu = Join-Path $Root 'etc/libvirt/qemu'
            New-Item -ItemType Directory -Force $qemu | Out-Null
            Copy-Item (Join-Path $PSScriptRoot '../../examples/kvm1.xml') (Join-Path $qemu 'kvm1.xml')
            foreach ($i in 1..8) { New-Volume -Pool default -Name "v$i.qcow2" -Size 64MB | Out-Null }
        }
        Command = 'foreach ($i in 1..8) { if (-not (Get-VMDisk -VMName kvm1 | Where-Object Source -Like "*/v$i.qcow2")) { Get-Volume -Pool default -Name "v$i.qcow2" | Add-VMDisk -VMName kvm1 | Out-Null } }'
        Check   = {
            param($Root)
            $disks = @(Get-VMDisk -VMName kvm1)
            $targets = @($disks.Target)
            if (($targets | Sort-Object -Unique).Count -ne $targets.Count) { "duplicate targets: $($targets -join ',')" }
            $sources = @($disks | Where-Object Source | ForEach-Object Source)
            if (($sources | Sort-Object -Unique).Count -ne $sources.Count) { "a volume is attached twice: $($sources -join ',')" }
        }
    }
    @{
        Name    = 'RemoveVolumeLoop'
        Setup   = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            foreach ($i in 1..10) { New-Volume -Pool default -Name "r$i.qcow2" -Size 64MB | Out-Null }
        }
        Command = 'Get-Volume -Pool default | Remove-Volume -Confirm:$false'
        Check   = { param($Root) }
    }
    @{
        # Merge-Volume: the overlay's guest view never changes; once the overlay is empty, the base holds all of it.
        Name       = 'MergeVolumeQcow2'
        Setup      = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            $images = Join-Path $Root 'var/lib/libvirt/images'
            & qemu-img create -q -f qcow2 (Join-Path $images 'base.qcow2') 96M
            $null = & qemu-io -c 'write -P 0x11 0 32M' (Join-Path $images 'base.qcow2')
            & qemu-img create -q -f qcow2 -o cluster_size=16k -b base.qcow2 -F qcow2 (Join-Path $images 'top.qcow2') 96M
            $null = & qemu-io -c 'write -P 0x22 16M 48M' -c 'write -z 4M 1M' -c 'write -P 0x33 70M 5k' (Join-Path $images 'top.qcow2')
            & qemu-img convert -O raw (Join-Path $images 'top.qcow2') (Join-Path $Root 'expected.raw')
        }
        Command    = 'Merge-Volume -Volume (Get-Volume -Pool default -Name top.qcow2)'
        AllowLeaks = $true
        Check      = {
            param($Root)
            $images = Join-Path $Root 'var/lib/libvirt/images'
            $expected = Join-Path $Root 'expected.raw'
            $out = & qemu-img compare -U (Join-Path $images 'top.qcow2') $expected 2>&1
            if ($LASTEXITCODE -ne 0) { "the overlay's guest view changed: $out" }
            $map = (& qemu-img map -U --output=json (Join-Path $images 'top.qcow2')) -join "`n" | ConvertFrom-Json
            if (-not ($map | Where-Object { $_.depth -eq 0 -and $_.present })) {
                $out = & qemu-img compare -U (Join-Path $images 'base.qcow2') $expected 2>&1
                if ($LASTEXITCODE -ne 0) { "the overlay is empty but the base does not hold its data: $out" }
            }
        }
    }
)
