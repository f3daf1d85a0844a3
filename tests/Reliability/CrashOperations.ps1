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
#   AllowLeaks   $true when a crash may leak qcow2 clusters by design (qemu-img check exit code 3); the harness
#                then also checks that Test-Volume -Repair Leaks leaves a copy of the image clean
#   AllowStaleCopied $true when a crash may leave refcount > 1 with COPIED still set (and nothing else wrong):
#                qemu-img check counts those as OFLAG_COPIED corruptions; the harness accepts exactly them and requires
#                Test-Volume -Repair Leaks to leave a copy clean
#   KnownIssue   why the class still fails (an engine limitation found by the harness and not fixed yet): the
#                default test run skips the class, the long form runs it and reports its failures
#   FreshSetup   $true to run Setup for every trial instead of copying one prepared root (cp -a, sparse)
# Setup and Check may use the harness helpers Write-CrashTestData, Test-ImagePattern and Compare-CrashImage.
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
    @{
        # zlib for 24 MiB of base64 text spread over a 64 MiB qcow2: every cluster goes through the compressor.
        Name         = 'ConvertVolumeCompress'
        Setup        = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            $raw = Join-Path $Root 'src.raw'
            Write-CrashTestData -Path $raw -Size 64MB -DataSize 24MB
            & qemu-img convert -f raw -O qcow2 $raw (Join-Path $Root 'var/lib/libvirt/images/src.qcow2')
            Remove-Item -LiteralPath $raw
        }
        Command      = 'Get-Volume -Pool default -Name src.qcow2 | Convert-Volume -Format qcow2 -Name out.qcow2 -Compress | Out-Null'
        DoneErrorIds = @('VolumeAlreadyExists')
        Check        = {
            param($Root)
            $dir = Join-Path $Root 'var/lib/libvirt/images'
            if (Test-Path -LiteralPath "$dir/out.qcow2") { Compare-CrashImage "$dir/src.qcow2" "$dir/out.qcow2" }
        }
    }
    @{
        # A raw volume converted to qcow2 in place: the file under the name is the raw or the qcow2, same data.
        Name    = 'ConvertVolumeRawReplace'
        Setup   = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            New-Item -ItemType Directory -Force (Join-Path $Root 'srv') | Out-Null
            Write-CrashTestData -Path (Join-Path $Root 'srv/orig.img') -Size 128MB -DataSize 48MB -Seed 2
            & cp --sparse=always (Join-Path $Root 'srv/orig.img') (Join-Path $Root 'var/lib/libvirt/images/disk.img')
        }
        Command = 'Get-Volume -Pool default -Name disk.img | Convert-Volume -Format qcow2 -Replace -Confirm:$false | Out-Null'
        Check   = {
            param($Root)
            $v = Get-Volume -Pool default -Name disk.img
            if ($v.Format -notin 'raw', 'qcow2') { "disk.img has format $($v.Format)" }
            if ($v.Capacity -ne 128MB) { "disk.img has capacity $($v.Capacity)" }
            Compare-CrashImage (Join-Path $Root 'srv/orig.img') (Join-Path $Root 'var/lib/libvirt/images/disk.img')
        }
    }
    @{
        # A monolithicSparse vmdk from outside the pools imported as qcow2.
        Name         = 'ImportVolumeVmdk'
        Setup        = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            New-Item -ItemType Directory -Force (Join-Path $Root 'srv/import') | Out-Null
            $raw = Join-Path $Root 'srv/import/disk.raw'
            Write-CrashTestData -Path $raw -Size 96MB -DataSize 48MB -Seed 3
            & qemu-img convert -f raw -O vmdk $raw (Join-Path $Root 'srv/import/disk.vmdk')
            Remove-Item -LiteralPath $raw
        }
        Command      = 'Import-Volume -Path (Join-Path $env:KVMSTORAGE_ROOT srv/import/disk.vmdk) -Pool default -Name disk.qcow2 | Out-Null'
        DoneErrorIds = @('VolumeAlreadyExists')
        Check        = {
            param($Root)
            $out = Join-Path $Root 'var/lib/libvirt/images/disk.qcow2'
            if (Test-Path -LiteralPath $out) { Compare-CrashImage (Join-Path $Root 'srv/import/disk.vmdk') $out }
        }
    }
    @{
        # 512-byte clusters and 24 MiB written: the snapshot raises ~50,000 refcounts and copies a 1 KiB L1.
        Name         = 'NewVolumeSnapshot'
        Setup        = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            New-Volume -Pool default -Name snap.qcow2 -Size 64MB -ClusterSize 512 | Out-Null
            $null = & qemu-io -c 'write -P 0xa5 0 24M' (Join-Path $Root 'var/lib/libvirt/images/snap.qcow2')
        }
        Command      = 'Get-Volume -Pool default -Name snap.qcow2 | New-VolumeSnapshot -Name s1 | Out-Null'
        DoneErrorIds = @('SnapshotNameAlreadyExists')
        AllowLeaks   = $true
        # A kill between raising the refcounts and clearing the active tables' COPIED flags leaves refcount 2 with
        # COPIED set (as qemu's own snapshot create can): qemu-img check calls it corruption, but it is one reference
        # and a leak; the harness accepts exactly that and requires Test-Volume -Repair Leaks to make it clean.
        AllowStaleCopied = $true
        Check        = {
            param($Root)
            $names = @(Get-Volume -Pool default -Name snap.qcow2 | Get-VolumeSnapshot | ForEach-Object Name)
            if (($names -join ',') -notin '', 's1') { "snapshots are '$($names -join ',')', neither none nor s1" }
            if (-not (Test-ImagePattern (Join-Path $Root 'var/lib/libvirt/images/snap.qcow2') '0xa5 0 24M', '0 24M 40M')) { 'snap.qcow2 no longer reads its data' }
        }
    }
    @{
        # s1 holds 0xa5 over 24 MiB; the active layer was rewritten with 0x5a and grew by 8 MiB of 0x3c.
        Name       = 'RestoreVolumeSnapshot'
        Setup      = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            New-Volume -Pool default -Name snap.qcow2 -Size 64MB -ClusterSize 512 | Out-Null
            $file = Join-Path $Root 'var/lib/libvirt/images/snap.qcow2'
            $null = & qemu-io -c 'write -P 0xa5 0 24M' $file
            Get-Volume -Pool default -Name snap.qcow2 | New-VolumeSnapshot -Name s1 | Out-Null
            $null = & qemu-io -c 'write -P 0x5a 0 24M' -c 'write -P 0x3c 24M 8M' $file
        }
        Command    = 'Get-Volume -Pool default -Name snap.qcow2 | Restore-VolumeSnapshot -Name s1 -Confirm:$false'
        AllowLeaks = $true
        Check      = {
            param($Root)
            $names = @(Get-Volume -Pool default -Name snap.qcow2 | Get-VolumeSnapshot | ForEach-Object Name)
            if (($names -join ',') -ne 's1') { "snapshots are '$($names -join ',')', not s1" }
            $file = Join-Path $Root 'var/lib/libvirt/images/snap.qcow2'
            if (-not (Test-ImagePattern $file '0xa5 0 24M', '0 24M 40M') -and -not (Test-ImagePattern $file '0x5a 0 24M', '0x3c 24M 8M', '0 32M 32M')) {
                'snap.qcow2 reads neither the snapshot''s data nor the data before the revert'
            }
        }
    }
    @{
        # s0 and s1 over data rewritten after each: removing s1 writes a new one-entry table and frees s1's clusters.
        Name         = 'RemoveVolumeSnapshot'
        Setup        = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            New-Volume -Pool default -Name snap.qcow2 -Size 64MB -ClusterSize 512 | Out-Null
            $file = Join-Path $Root 'var/lib/libvirt/images/snap.qcow2'
            $null = & qemu-io -c 'write -P 0xa5 0 24M' $file
            Get-Volume -Pool default -Name snap.qcow2 | New-VolumeSnapshot -Name s0 | Out-Null
            $null = & qemu-io -c 'write -P 0x5a 0 24M' $file
            Get-Volume -Pool default -Name snap.qcow2 | New-VolumeSnapshot -Name s1 | Out-Null
            $null = & qemu-io -c 'write -P 0x3c 0 24M' $file
        }
        Command      = 'Get-Volume -Pool default -Name snap.qcow2 | Remove-VolumeSnapshot -Name s1 -Confirm:$false'
        DoneErrorIds = @('SnapshotNotFound')
        AllowLeaks   = $true
        Check        = {
            param($Root)
            $names = @(Get-Volume -Pool default -Name snap.qcow2 | Get-VolumeSnapshot | ForEach-Object Name)
            if (($names -join ',') -notin 's0,s1', 's0') { "snapshots are '$($names -join ',')', neither s0,s1 nor s0" }
            if (-not (Test-ImagePattern (Join-Path $Root 'var/lib/libvirt/images/snap.qcow2') '0x3c 0 24M', '0 24M 40M')) { 'snap.qcow2 no longer reads its data' }
        }
    }
    @{
        # 48 MiB of written zeros between two data runs: freed in place, then the image rewritten and renamed over.
        Name       = 'OptimizeVolumeCompact'
        Setup      = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            New-Volume -Pool default -Name opt.qcow2 -Size 128MB -ClusterSize 4096 | Out-Null
            $null = & qemu-io -c 'write -P 0x11 0 16M' -c 'write -P 0 16M 48M' -c 'write -P 0x22 64M 16M' (Join-Path $Root 'var/lib/libvirt/images/opt.qcow2')
        }
        Command    = 'Get-Volume -Pool default -Name opt.qcow2 | Optimize-Volume -Compact | Out-Null'
        AllowLeaks = $true
        Check      = {
            param($Root)
            if (-not (Test-ImagePattern (Join-Path $Root 'var/lib/libvirt/images/opt.qcow2') '0x11 0 16M', '0 16M 48M', '0x22 64M 16M', '0 80M 48M')) { 'opt.qcow2 no longer reads its data' }
        }
    }
    @{
        # Set-Volume (safe rebase) of a 4 KiB-cluster clone from one golden image onto another that differs
        # everywhere: 47 MiB are copied into the clone before cluster 0 switches to the new backing file.
        Name       = 'SetVolumeRebase'
        Setup      = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            $images = Join-Path $Root 'var/lib/libvirt/images'
            & qemu-img create -q -f qcow2 (Join-Path $images 'gold1.qcow2') 64M
            & qemu-img create -q -f qcow2 (Join-Path $images 'gold2.qcow2') 64M
            $null = & qemu-io -c 'write -P 0x11 0 48M' (Join-Path $images 'gold1.qcow2')
            $null = & qemu-io -c 'write -P 0x22 0 64M' (Join-Path $images 'gold2.qcow2')
            & qemu-img create -q -f qcow2 -o cluster_size=4k -b gold1.qcow2 -F qcow2 (Join-Path $images 'clone.qcow2') 64M
            $null = & qemu-io -c 'write -P 0x33 8M 1M' (Join-Path $images 'clone.qcow2')
        }
        Command    = 'Set-Volume -Volume (Get-Volume -Pool default -Name clone.qcow2) -BackingPath (Get-Volume -Pool default -Name gold2.qcow2) -RelativeBackingPath'
        AllowLeaks = $true
        Check      = {
            param($Root)
            $clone = Join-Path $Root 'var/lib/libvirt/images/clone.qcow2'
            $v = Get-Volume -Pool default -Name clone.qcow2
            if ($v.BackingFile -notin 'gold1.qcow2', 'gold2.qcow2') { "clone.qcow2 has backing file '$($v.BackingFile)'" }
            if (-not (Test-ImagePattern $clone '0x11 0 8M', '0x33 8M 1M', '0x11 9M 39M', '0 48M 16M')) { "clone.qcow2 no longer reads what its guest saw (backing file $($v.BackingFile))" }
        }
    }
    @{
        # Set-Volume -Compat 0.10 (qemu-img amend) of a 512-byte-cluster overlay whose 8 MiB of zero clusters, in the
        # active table and in a snapshot's, become clusters of zeros over the backing file: 16,384 new clusters are
        # counted and flushed, the L2 tables rewritten, the old references dropped, and only then the header says v2.
        Name       = 'SetVolumeCompatDowngrade'
        Setup      = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            $images = Join-Path $Root 'var/lib/libvirt/images'
            & qemu-img create -q -f qcow2 (Join-Path $images 'gold.qcow2') 32M
            $null = & qemu-io -c 'write -P 0x11 0 24M' (Join-Path $images 'gold.qcow2')
            & qemu-img create -q -f qcow2 -o cluster_size=512 -b gold.qcow2 -F qcow2 (Join-Path $images 'over.qcow2') 32M
            $over = Join-Path $images 'over.qcow2'
            $null = & qemu-io -c 'write -z 0 4M' -c 'write -P 0x33 8M 1M' $over
            & qemu-img snapshot -c s1 $over
            $null = & qemu-io -c 'write -z 4M 4M' $over
        }
        Command    = 'Set-Volume -Volume (Get-Volume -Pool default -Name over.qcow2) -Compat 0.10'
        AllowLeaks = $true
        Check      = {
            param($Root)
            $over = Join-Path $Root 'var/lib/libvirt/images/over.qcow2'
            $v = Get-Volume -Pool default -Name over.qcow2
            if ($v.Compat -notin '1.1', '0.10') { "over.qcow2 has compat '$($v.Compat)'" }
            if (-not (Test-ImagePattern $over '0 0 8M', '0x33 8M 1M', '0x11 9M 15M', '0 24M 8M')) { "over.qcow2 no longer reads what its guest saw (compat $($v.Compat))" }
        }
    }
    @{
        # Set-Volume -RefcountBits 64 of a 512-byte-cluster image holding 24 MiB: 64-bit refcount blocks for some 50,000
        # clusters written past everything in use, then one header write switches to them.
        Name       = 'SetVolumeRefcountWidth'
        Setup      = {
            param($Root)
            New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
            New-Volume -Pool default -Name wide.qcow2 -Size 64MB -ClusterSize 512 | Out-Null
            $null = & qemu-io -c 'write -P 0xa5 0 24M' (Join-Path $Root 'var/lib/libvirt/images/wide.qcow2')
        }
        Command    = 'Set-Volume -Volume (Get-Volume -Pool default -Name wide.qcow2) -RefcountBits 64'
        AllowLeaks = $true
        Check      = {
            param($Root)
            $wide = Join-Path $Root 'var/lib/libvirt/images/wide.qcow2'
            $bits = (& qemu-img info -U --output=json $wide | ConvertFrom-Json).'format-specific'.data.'refcount-bits'
            if ($bits -notin 16, 64) { "wide.qcow2 has $bits-bit refcounts" }
            if (-not (Test-ImagePattern $wide '0xa5 0 24M', '0 24M 40M')) { "wide.qcow2 no longer reads its data ($bits-bit refcounts)" }
        }
    }
)
