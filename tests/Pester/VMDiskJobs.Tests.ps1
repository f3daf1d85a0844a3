#Requires -Version 7.4
# The storage of running VMs: Backup-VMDisk (full and incremental over checkpoints), Move-VMDisk (block copy and
# pivot), New-VMDiskSnapshot and Merge-Volume of the active overlay (block commit and pivot), and -ForceShare reads,
# on a private libvirtd with a TCG guest whose disk is written through the QEMU monitor while it runs; qemu-img
# (-U) is the oracle. Offline first: the same commands on a shut-off VM's files, and what needs a daemon.

BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot 'LibvirtDaemon.psm1') -Force
    $script:emulatorSkip = Get-TestLibvirtdSkipReason -NeedEmulator
    $script:noQemu = -not ((Get-Command qemu-io -ErrorAction SilentlyContinue) -and (Get-Command qemu-img -ErrorAction SilentlyContinue))
}

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Join-Path $PSScriptRoot 'LibvirtDaemon.psm1') -Force
    $script:kvm1Xml = Join-Path $PSScriptRoot '../../examples/kvm1.xml'

    function Assert-Same([string] $A, [string] $B) {
        $out = qemu-img compare -U $A $B 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "qemu-img compare -U $A $B said: $out"
    }

    # Bytes stored in the image's own clusters (not its backing file's), from qemu-img map.
    function Get-OwnDataBytes([string] $Path) {
        $map = (qemu-img map -U --output=json $Path) -join "`n" | ConvertFrom-Json
        ($map | Where-Object { $_.depth -eq 0 -and $_.data } | Measure-Object -Property length -Sum).Sum
    }
}

Describe 'VM disk jobs offline (a shut-off VM, no daemon)' -Skip:$noQemu {
    BeforeEach {
        $script:root = New-TestHostRoot
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build
        New-StoragePool -Name backups -Path /srv/backups -Build
        $qemu = Join-Path $root 'etc/libvirt/qemu'
        New-Item -ItemType Directory -Force $qemu | Out-Null
        [IO.File]::WriteAllText((Join-Path $qemu 'kvm1.xml'), (Get-Content -Raw $kvm1Xml))
        $script:disk = New-Volume default kvm1.qcow2 -Size 16MB | Add-VMDisk -VMName kvm1
        $script:image = Join-Path $root 'var/lib/libvirt/images/kvm1.qcow2'
        qemu-io -f qcow2 -c 'write -P 0x42 1M 2M' $image | Out-Null
    }

    It 'backs up a shut-off VM by copying its images, moves a disk and snapshots it by editing the definition' {
        $backup = Backup-VMDisk -VMName kvm1 -Pool backups -Name nightly
        $backup.Name | Should -Be 'nightly.qcow2'
        Assert-Same (Join-Path $root 'srv/backups/nightly.qcow2') $image

        $moved = Move-VMDisk kvm1 $disk.Target -Pool backups -Name moved.qcow2 -Confirm:$false
        $moved.Source | Should -Be '/srv/backups/moved.qcow2'
        Assert-Same (Join-Path $root 'srv/backups/moved.qcow2') $image
        (Get-Content -Raw (Join-Path $root 'etc/libvirt/qemu/kvm1.xml')) | Should -Match "file='/srv/backups/moved.qcow2'"
        Test-Path $image | Should -BeTrue   # kept without -RemoveSource

        $overlay = New-VMDiskSnapshot kvm1 -Name before-upgrade -Target $disk.Target
        $overlay.Name | Should -Be 'moved-before-upgrade.qcow2'
        $overlay.BackingPath | Should -Be '/srv/backups/moved.qcow2'
        (Get-VMDisk kvm1 -Target $disk.Target).Source | Should -Be '/srv/backups/moved-before-upgrade.qcow2'
    }

    It 'refuses what needs a running libvirtd, with nothing written' {
        New-Item -ItemType Directory -Force (Join-Path $root 'run/libvirt/qemu') | Out-Null
        Set-Content (Join-Path $root 'run/libvirt/qemu/kvm1.xml') "<domstatus state='running' reason='booted' pid='1'><domain type='qemu'><name>kvm1</name></domain></domstatus>"
        $before = Get-TreeSnapshot $root
        $ErrorActionPreference = 'Stop'
        foreach ($run in { Backup-VMDisk kvm1 -Pool backups }, { Move-VMDisk kvm1 $disk.Target -Pool backups -Confirm:$false }, { New-VMDiskSnapshot kvm1 -Name s }, { Get-VMDiskCheckpoint kvm1 }) {
            $err = $null
            try { & $run -ErrorAction Stop | Out-Null } catch { $err = $_ }
            $err.FullyQualifiedErrorId | Should -BeLike 'LibvirtDaemonRequired,*' -Because "$run"
            "$err" | Should -Match 'libvirtd'
        }
        { Backup-VMDisk kvm1 -Pool backups -Incremental -ErrorAction Stop } | Should -Throw -ErrorId 'LibvirtDaemonRequired,*'
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses an incremental backup of a shut-off VM and a name that collides' {
        { Backup-VMDisk kvm1 -Pool backups -Incremental -ErrorAction Stop } | Should -Throw -ErrorId 'IncrementalBackupNeedsRunningVM,*'
        $null = Backup-VMDisk kvm1 -Pool backups -Name once
        { Backup-VMDisk kvm1 -Pool backups -Name once -ErrorAction Stop } | Should -Throw -ErrorId 'VolumeAlreadyExists,*'
        { Backup-VMDisk kvm1 -Pool backups -Target vdz -ErrorAction Stop } | Should -Throw -ErrorId 'DiskNotFound,*'
    }
}

Describe 'VM disk jobs on libvirtd with a running TCG guest' -Tag Daemon -Skip:([bool]$emulatorSkip -or $noQemu) {
    BeforeAll {
        $script:root = New-TestHostRoot -Name jobs
        $script:daemon = Start-TestLibvirtd -Root $root
        $null = Connect-LibvirtHost -Uri $daemon.Uri
        function Invoke-Virsh { $out = & virsh -c $daemon.Uri @args 2>&1; if ($LASTEXITCODE) { throw "virsh $args failed: $out" }; $out | ForEach-Object { "$_".Trim() } | Where-Object { $_ } }
        foreach ($p in 'vm', 'backups', 'fast') {
            New-StoragePool -Name $p -Path (Join-Path $root "images/$p") -Build
            Start-StoragePool $p
        }
        $script:vmDir = Join-Path $root 'images/vm'
        $script:backupDir = Join-Path $root 'images/backups'
        $script:fastDir = Join-Path $root 'images/fast'
        $null = New-Volume -Pool vm -Name data.qcow2 -Size 64MB
        $null = New-Volume -Pool vm -Name big.qcow2 -Size 2GB
        # A disk with enough data that a copy of it takes a moment, for the cancellations.
        qemu-io -f qcow2 -c 'write -P 0x55 0 1536M' (Join-Path $vmDir big.qcow2) | Out-Null
        $xml = Join-Path $root 'jobs-vm.xml'
        Set-Content -Path $xml -Value @"
<domain type='qemu'>
  <name>kvmstorage-jobs</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>
"@
        Invoke-Virsh define $xml | Out-Null
        $null = Add-VMDisk -VMName kvmstorage-jobs -Pool vm -Name data.qcow2
        $null = Add-VMDisk -VMName kvmstorage-jobs -Pool vm -Name big.qcow2
        Invoke-Virsh start kvmstorage-jobs | Out-Null

        # Writes into the running guest's disk, as the guest would, through the QEMU monitor's qemu-io.
        function Write-Guest([string] $Target, [string] $Command) {
            $index = @{ vda = 0; vdb = 1 }[$Target]
            $disk = (Get-VMDisk kvmstorage-jobs -Target $Target)
            $alias = "virtio-disk$index"
            Invoke-Virsh qemu-monitor-command kvmstorage-jobs --hmp "qemu-io -d /machine/peripheral/$alias/virtio-backend `"$Command`"" | Out-Null
            # Flushed, so QEMU's metadata cache is on disk for the oracle (qemu-img -U reads the file, not QEMU's cache).
            Invoke-Virsh qemu-monitor-command kvmstorage-jobs --hmp "qemu-io -d /machine/peripheral/$alias/virtio-backend `"flush`"" | Out-Null
            $disk
        }

        function Get-DiskSource([string] $Target, [switch] $Inactive) {
            $text = if ($Inactive) { Invoke-Virsh domblklist kvmstorage-jobs --inactive } else { Invoke-Virsh domblklist kvmstorage-jobs }
            foreach ($line in $text) { if ($line -match "^$Target\s+(\S+)") { return $Matches[1] } }
        }

        function Assert-Running { (Invoke-Virsh domstate kvmstorage-jobs) | Should -Contain 'running' }

        # Starts a command in another runspace and, once its QEMU block job runs, slows the job to 1 MiB/s through the
        # monitor (block-job-set-speed), so that stopping the command lands while the job is still copying.
        function Start-ThrottledCommand([string] $Command) {
            $ps = [PowerShell]::Create()
            $null = $ps.AddScript("Import-Module '$env:KVMSTORAGE_TEST_MODULE'; `$env:KVMSTORAGE_ROOT = '$root'; Connect-LibvirtHost -Uri '$($daemon.Uri)' | Out-Null; $Command")
            $handle = $ps.BeginInvoke()
            $throttled = $false
            for ($i = 0; $i -lt 300 -and -not $throttled -and -not $handle.IsCompleted; $i++) {
                $jobs = (& virsh -c $daemon.Uri qemu-monitor-command kvmstorage-jobs '{"execute":"query-block-jobs"}' 2>$null) -join '' | ConvertFrom-Json
                foreach ($job in @($jobs.return)) {
                    & virsh -c $daemon.Uri qemu-monitor-command kvmstorage-jobs "{`"execute`":`"block-job-set-speed`",`"arguments`":{`"device`":`"$($job.device)`",`"speed`":1048576}}" 2>&1 | Out-Null
                    $throttled = $true
                }
            }
            [pscustomobject]@{ PowerShell = $ps; Handle = $handle; Throttled = $throttled }
        }
    }
    AfterAll {
        Get-LibvirtHost | Disconnect-LibvirtHost
        if ($daemon) { Stop-TestLibvirtd $daemon }
    }

    It 'backs up in full at a moment, then incrementally: only changed clusters, over the full backup' {
        Write-Guest vda 'write -P 0x6b 16M 1M' | Out-Null
        $full = Backup-VMDisk -VMName kvmstorage-jobs -Target vda -Pool backups -Name full
        $full.Name | Should -Be 'full.qcow2'
        Assert-Same (Join-Path $backupDir full.qcow2) (Join-Path $vmDir data.qcow2)
        Assert-Running
        $cp = @(Get-VMDiskCheckpoint kvmstorage-jobs)
        $cp.Count | Should -Be 1
        $cp[0].Backups['vda'] | Should -Be (Join-Path $backupDir full.qcow2)
        (Invoke-Virsh checkpoint-list kvmstorage-jobs --name) | Should -Contain $cp[0].Name

        Write-Guest vda 'write -P 0x77 40M 1M' | Out-Null
        $inc = Backup-VMDisk -VMName kvmstorage-jobs -Target vda -Pool backups -Name inc -Incremental
        $inc.BackingPath | Should -Be (Join-Path $backupDir full.qcow2)
        $own = Get-OwnDataBytes (Join-Path $backupDir inc.qcow2)
        $own | Should -BeGreaterOrEqual 1MB
        $own | Should -BeLessOrEqual 2MB -Because 'an incremental backup holds only the clusters written since the full one'
        Assert-Same (Join-Path $backupDir inc.qcow2) (Join-Path $vmDir data.qcow2)

        # The chain flattened is a full restore image.
        $restore = Copy-Volume -Volume $inc -Name restore.qcow2
        Assert-Same (Join-Path $backupDir restore.qcow2) (Join-Path $vmDir data.qcow2)
        (Get-OwnDataBytes (Join-Path $backupDir restore.qcow2)) | Should -BeGreaterOrEqual 2MB
        @(Get-VMDiskCheckpoint kvmstorage-jobs).Count | Should -Be 2
        Get-VMDiskCheckpoint kvmstorage-jobs | Select-Object -First 1 | Remove-VMDiskCheckpoint -Confirm:$false
        @(Get-VMDiskCheckpoint kvmstorage-jobs).Count | Should -Be 1
    }

    It 'reads a running VM''s image only with -ForceShare, and warns' {
        $image = Join-Path $vmDir data.qcow2
        { Test-Volume $image -ErrorAction Stop } | Should -Throw -ErrorId 'ImageInUse,*'
        $result = Test-Volume $image -ForceShare -WarningVariable warned 3>$null
        $result.Passed | Should -BeTrue
        "$warned" | Should -Match 'kvmstorage-jobs'
        (Compare-Volume $image (Join-Path $backupDir restore.qcow2) -ForceShare 3>$null).Identical | Should -BeTrue
        $out = Join-Path $root "export-$([guid]::NewGuid()).qcow2"
        $null = Export-Volume -Volume $image -Destination $out -ForceShare 3>$null
        Assert-Same $out $image
    }

    It 'cancels a backup: no file left, no checkpoint made, the VM unchanged' {
        $checkpoints = @(Get-VMDiskCheckpoint kvmstorage-jobs).Name
        $run = Start-ThrottledCommand 'Backup-VMDisk -VMName kvmstorage-jobs -Target vdb -Pool backups -Name cancelled'
        $file = Join-Path $backupDir cancelled.qcow2
        # (The runspace's streams are read only once it has stopped: enumerating them while it runs waits for it.)
        $run.Throttled | Should -BeTrue -Because 'the backup job must have started' 
        Test-Path $file | Should -BeTrue
        $run.Handle.IsCompleted | Should -BeFalse
        $run.PowerShell.Stop()
        $run.PowerShell.Dispose()
        Test-Path $file | Should -BeFalse
        @(Get-VMDiskCheckpoint kvmstorage-jobs).Name | Should -Be $checkpoints
        Assert-Running
        (Invoke-Virsh domjobinfo kvmstorage-jobs) -join "`n" | Should -Match 'Job type:\s+None'
    }

    It 'moves the disk of the running VM to another pool: it keeps running on the copy, and the definition follows' {
        Write-Guest vda 'write -P 0x3c 8M 512k' | Out-Null
        $old = Join-Path $vmDir data.qcow2
        $moved = Move-VMDisk kvmstorage-jobs vda -Pool fast -Confirm:$false
        $new = Join-Path $fastDir data.qcow2
        $moved.Source | Should -Be $new
        Assert-Running
        Get-DiskSource vda | Should -Be $new
        Get-DiskSource vda -Inactive | Should -Be $new
        Assert-Same $new $old
        # Written after the pivot: lands in the new image only.
        Write-Guest vda 'write -P 0x99 24M 64k' | Out-Null
        Write-Guest vda 'flush' | Out-Null
        $read = qemu-io -r -U -f qcow2 -c 'read -P 0x99 24M 64k' $new 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "$read"
        "$read" | Should -Not -Match 'Pattern verification failed'
        "$read" | Should -Match 'read 65536/65536 bytes'
        # And back, removing the image it leaves.
        $null = Move-VMDisk kvmstorage-jobs vda -Pool vm -Name data2.qcow2 -RemoveSource -Confirm:$false
        Get-DiskSource vda | Should -Be (Join-Path $vmDir data2.qcow2)
        Test-Path $new | Should -BeFalse
    }

    It 'cancels a move: no file left and the VM still on its image' {
        $before = Get-DiskSource vdb
        $run = Start-ThrottledCommand 'Move-VMDisk kvmstorage-jobs vdb -Pool fast -Confirm:$false'
        $file = Join-Path $fastDir big.qcow2
        $run.Throttled | Should -BeTrue -Because 'the block copy must have started' 
        Test-Path $file | Should -BeTrue
        $run.Handle.IsCompleted | Should -BeFalse
        $run.PowerShell.Stop()
        $run.PowerShell.Dispose()
        Test-Path $file | Should -BeFalse
        Get-DiskSource vdb | Should -Be $before
        Get-DiskSource vdb -Inactive | Should -Be $before
        Assert-Running
    }

    It 'takes disk-only snapshots of the running VM, then merges the active overlay into its own backing file, live' {
        $base = Join-Path $vmDir data2.qcow2
        $middle = Join-Path $vmDir data2-upgrade.qcow2
        $top = Join-Path $vmDir data2-upgrade-second.qcow2
        $overlay = New-VMDiskSnapshot kvmstorage-jobs -Name upgrade -Target vda
        $overlay.Name | Should -Be 'data2-upgrade.qcow2'
        Get-DiskSource vda | Should -Be $middle
        Get-DiskSource vda -Inactive | Should -Be $middle
        Write-Guest vda 'write -P 0x5e 48M 1M' | Out-Null
        (Get-OwnDataBytes $middle) | Should -BeGreaterOrEqual 1MB
        $null = New-VMDiskSnapshot kvmstorage-jobs -Name second -Target vda
        Get-DiskSource vda | Should -Be $top
        Write-Guest vda 'write -P 0x6f 52M 1M' | Out-Null
        $baseHash = (Get-FileHash $base).Hash

        # The top merges into the layer right below it, not into the bottom of the chain.
        $merged = Merge-Volume -Volume (Get-Volume -Pool vm -Name data2-upgrade-second.qcow2) -RemoveOverlay -PassThru -Confirm:$false
        $merged.Path | Should -Be $middle
        Assert-Running
        Get-DiskSource vda | Should -Be $middle
        Get-DiskSource vda -Inactive | Should -Be $middle
        Test-Path $top | Should -BeFalse
        (Get-FileHash $base).Hash | Should -Be $baseHash

        $merged = Merge-Volume -Volume (Get-Volume -Pool vm -Name data2-upgrade.qcow2) -RemoveOverlay -PassThru -Confirm:$false
        $merged.Path | Should -Be $base
        Assert-Running
        Get-DiskSource vda | Should -Be $base
        Get-DiskSource vda -Inactive | Should -Be $base
        Test-Path $middle | Should -BeFalse
        Write-Guest vda 'flush' | Out-Null
        foreach ($check in 'read -P 0x5e 48M 1M', 'read -P 0x6f 52M 1M') {
            $read = qemu-io -r -U -f qcow2 -c $check $base 2>&1
            $LASTEXITCODE | Should -Be 0 -Because "$read"
            "$read" | Should -Not -Match 'Pattern verification failed'
            "$read" | Should -Match 'read 1048576/1048576 bytes'
        }
    }
}
