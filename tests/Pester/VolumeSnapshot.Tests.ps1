#Requires -Version 7.4
# Get-VolumeSnapshot, New-VolumeSnapshot, Restore-VolumeSnapshot, Remove-VolumeSnapshot against the built
# module, with qemu-img and qemu-io as the oracles.

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:hasQemu = [bool](Get-Command qemu-io -ErrorAction SilentlyContinue) -and [bool](Get-Command qemu-img -ErrorAction SilentlyContinue)

    function Assert-QemuCheckClean([string] $Path) {
        $out = qemu-img check --output=json $Path 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "qemu-img check $Path said: $out"
    }

    function Get-QemuSnapshotName([string] $Path) {
        $info = qemu-img info -U --output=json $Path | ConvertFrom-Json -AsHashtable
        @($info['snapshots'] | ForEach-Object { "$($_['id']):$($_['name'])" })
    }

    function New-SnapshotHost {
        $root = New-TestHostRoot
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build
        New-Volume -Pool default -Name disk.qcow2 -Size 8MB | Out-Null
        New-Volume -Pool default -Name disk.img -Size 1MB -Format raw | Out-Null
        $root
    }

    $script:moduleErrorId = @{
        Get     = 'KvmStorage.Commands.VolumeSnapshot.GetVolumeSnapshotCommand'
        New     = 'KvmStorage.Commands.VolumeSnapshot.NewVolumeSnapshotCommand'
        Restore = 'KvmStorage.Commands.VolumeSnapshot.RestoreVolumeSnapshotCommand'
        Remove  = 'KvmStorage.Commands.VolumeSnapshot.RemoveVolumeSnapshotCommand'
    }
}

Describe 'New-VolumeSnapshot and Get-VolumeSnapshot' {
    BeforeEach {
        $script:root = New-SnapshotHost
        $script:disk = Join-Path $root 'var/lib/libvirt/images/disk.qcow2'
    }

    It 'completes snapshot names of the volume given by -Volume' {
        New-VolumeSnapshot -Volume /var/lib/libvirt/images/disk.qcow2 -Name before-upgrade | Out-Null
        New-VolumeSnapshot -Volume /var/lib/libvirt/images/disk.qcow2 -Name after-upgrade | Out-Null
        foreach ($cmd in 'Get-VolumeSnapshot', 'Restore-VolumeSnapshot', 'Remove-VolumeSnapshot') {
            $line = "$cmd -Volume /var/lib/libvirt/images/disk.qcow2 -Name be"
            @((TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText) | Should -Be @('before-upgrade') -Because $cmd
        }
    }

    It 'takes snapshots from a piped volume with qemu ids, and lists them' {
        $first = Get-Volume -Pool default -Name disk.qcow2 | New-VolumeSnapshot -Name first
        $first | Should -BeOfType ([KvmStorage.Core.Volumes.VolumeSnapshot])
        $first.Id | Should -Be '1'
        $first.Name | Should -Be 'first'
        $first.VolumeName | Should -Be 'disk.qcow2'
        $first.Pool | Should -Be 'default'
        $first.Path | Should -Be '/var/lib/libvirt/images/disk.qcow2'
        $first.DiskSize | Should -Be 8MB
        $first.VmStateSize | Should -Be 0
        $first.Icount | Should -BeNullOrEmpty
        New-VolumeSnapshot -Volume (Get-Volume -Pool default -Name disk.qcow2) -Name second | Out-Null
        $list = @(Get-Volume -Pool default -Name disk.qcow2 | Get-VolumeSnapshot)
        $list.Name | Should -Be @('first', 'second')
        $list.Id | Should -Be @('1', '2')
        @(Get-VolumeSnapshot -Name 'sec*').Name | Should -Be @('second')
        @(Get-VolumeSnapshot -Volume $disk -Name first).Id | Should -Be @('1')
        (Get-Volume -Pool default -Name disk.qcow2).Snapshots.Name | Should -Be @('first', 'second')
    }

    It 'lists what qemu-img lists and leaves a clean image' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        New-VolumeSnapshot -Volume $disk -Name a | Out-Null
        qemu-img snapshot -c b $disk
        New-VolumeSnapshot -Volume $disk -Name c | Out-Null
        Assert-QemuCheckClean $disk
        $ours = @(Get-VolumeSnapshot -Volume $disk | ForEach-Object { "$($_.Id):$($_.Name)" })
        $ours | Should -Be (Get-QemuSnapshotName $disk)
        $ours | Should -Be @('1:a', '2:b', '3:c')
    }

    It 'lists nothing for a raw volume, and every pool''s snapshots without -Volume' {
        Get-Volume -Pool default -Name disk.img | Get-VolumeSnapshot | Should -BeNullOrEmpty
        New-VolumeSnapshot -Volume $disk -Name only | Out-Null
        @(Get-VolumeSnapshot).Name | Should -Be @('only')
    }

    It 'writes SnapshotNotFound for an exact name that matches nothing, and nothing for a wildcard' {
        New-VolumeSnapshot -Volume $disk -Name only | Out-Null
        { Get-VolumeSnapshot -Volume $disk -Name nope -ErrorAction Stop } | Should -Throw -ErrorId "SnapshotNotFound,$($moduleErrorId.Get)"
        Get-VolumeSnapshot -Volume $disk -Name 'nope*' | Should -BeNullOrEmpty
    }

    It 'changes nothing with -WhatIf' {
        $before = Get-TreeSnapshot $root
        New-VolumeSnapshot -Volume $disk -Name w -WhatIf | Should -BeNullOrEmpty
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses <Case> and changes nothing' -ForEach @(
        @{ Case = 'a duplicate name'; Volume = 'disk.qcow2'; Name = 'taken'; Id = 'SnapshotNameAlreadyExists' }
        @{ Case = 'an empty-looking name'; Volume = 'disk.qcow2'; Name = "a`tb"; Id = 'InvalidSnapshotName' }
        @{ Case = 'a raw volume'; Volume = 'disk.img'; Name = 'x'; Id = 'SnapshotsNotSupported' }
        @{ Case = 'a missing image'; Volume = 'missing.qcow2'; Name = 'x'; Id = 'ImageNotFound' }
    ) {
        New-VolumeSnapshot -Volume $disk -Name taken | Out-Null
        $before = Get-TreeSnapshot $root
        $path = Join-Path $root "var/lib/libvirt/images/$Volume"
        { New-VolumeSnapshot -Volume $path -Name $Name -ErrorAction Stop } | Should -Throw -ErrorId "$Id,$($moduleErrorId.New)"
        Get-TreeSnapshot $root | Should -Be $before
    }
}

Describe 'Restore-VolumeSnapshot' {
    BeforeEach {
        $script:root = New-SnapshotHost
        $script:disk = Join-Path $root 'var/lib/libvirt/images/disk.qcow2'
        New-VolumeSnapshot -Volume $disk -Name empty | Out-Null
    }

    It 'brings back the content and the size of the snapshot (<Via>)' -Tag Oracle -ForEach @(
        @{ Via = 'name' }
        @{ Via = 'id' }
        @{ Via = 'pipeline' }
    ) {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-io is not installed'; return }
        qemu-io -c 'write -P 0x5a 0 1M' $disk | Out-Null
        New-VolumeSnapshot -Volume $disk -Name data | Out-Null
        qemu-io -c 'write -P 0x6b 0 64k' $disk | Out-Null
        Resize-Volume -Pool default -Name disk.qcow2 -Size 16MB
        switch ($Via) {
            'name' { $v = Restore-VolumeSnapshot -Volume $disk -Name data -PassThru -Confirm:$false }
            'id' { $v = Restore-VolumeSnapshot -Volume $disk -Id 2 -PassThru -Confirm:$false }
            'pipeline' { $v = Get-VolumeSnapshot -Volume $disk -Name data | Restore-VolumeSnapshot -PassThru -Confirm:$false }
        }
        $v.Capacity | Should -Be 8MB
        Assert-QemuCheckClean $disk
        qemu-io -r -c 'read -P 0x5a 0 1M' $disk | Should -Not -Match 'Pattern verification failed'
        $LASTEXITCODE | Should -Be 0
        @(Get-VolumeSnapshot -Volume $disk).Name | Should -Be @('empty', 'data')
    }

    It 'changes nothing with -WhatIf' {
        $before = Get-TreeSnapshot $root
        Restore-VolumeSnapshot -Volume $disk -Name empty -WhatIf
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses <Case> and changes nothing' -ForEach @(
        @{ Case = 'an unknown name'; Params = @{ Name = 'nope' }; Volume = 'disk.qcow2'; Id = 'SnapshotNotFound' }
        @{ Case = 'an unknown id'; Params = @{ Id = '9' }; Volume = 'disk.qcow2'; Id = 'SnapshotNotFound' }
        @{ Case = 'a raw volume'; Params = @{ Name = 'empty' }; Volume = 'disk.img'; Id = 'SnapshotsNotSupported' }
    ) {
        $before = Get-TreeSnapshot $root
        $path = Join-Path $root "var/lib/libvirt/images/$Volume"
        { Restore-VolumeSnapshot -Volume $path @Params -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId "$Id,$($moduleErrorId.Restore)"
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses a snapshot object whose snapshot was deleted since' {
        $gone = Get-VolumeSnapshot -Volume $disk -Name empty
        Remove-VolumeSnapshot -Volume $disk -Name empty -Confirm:$false
        New-VolumeSnapshot -Volume $disk -Name other | Out-Null
        $before = Get-TreeSnapshot $root
        { $gone | Restore-VolumeSnapshot -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId "SnapshotNotFound,$($moduleErrorId.Restore)"
        Get-TreeSnapshot $root | Should -Be $before
    }
}

Describe 'Remove-VolumeSnapshot' {
    BeforeEach {
        $script:root = New-SnapshotHost
        $script:disk = Join-Path $root 'var/lib/libvirt/images/disk.qcow2'
        'a', 'b', 'c' | ForEach-Object { New-VolumeSnapshot -Volume $disk -Name $_ | Out-Null }
    }

    It 'deletes by name, by id and from the pipeline, leaving a clean image' {
        Remove-VolumeSnapshot -Volume $disk -Name a -Confirm:$false
        Remove-VolumeSnapshot -Volume $disk -Id 3 -Confirm:$false
        @(Get-VolumeSnapshot -Volume $disk).Name | Should -Be @('b')
        Get-VolumeSnapshot -Volume $disk | Remove-VolumeSnapshot -Confirm:$false
        Get-VolumeSnapshot -Volume $disk | Should -BeNullOrEmpty
        if ($hasQemu) { Assert-QemuCheckClean $disk }
    }

    It 'writes an error for an unknown name and goes on with the next' {
        Remove-VolumeSnapshot -Volume $disk -Name nope, b -Confirm:$false -ErrorVariable errors -ErrorAction SilentlyContinue
        $errors.Count | Should -Be 1
        $errors[0].FullyQualifiedErrorId | Should -Be "SnapshotNotFound,$($moduleErrorId.Remove)"
        @(Get-VolumeSnapshot -Volume $disk).Name | Should -Be @('a', 'c')
    }

    It 'changes nothing with -WhatIf' {
        $before = Get-TreeSnapshot $root
        Get-VolumeSnapshot -Volume $disk | Remove-VolumeSnapshot -WhatIf
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses <Case> and changes nothing' -ForEach @(
        @{ Case = 'an unknown name'; Params = @{ Name = 'nope' }; Volume = 'disk.qcow2'; Id = 'SnapshotNotFound' }
        @{ Case = 'an unknown id'; Params = @{ Id = '7' }; Volume = 'disk.qcow2'; Id = 'SnapshotNotFound' }
        @{ Case = 'a raw volume'; Params = @{ Name = 'a' }; Volume = 'disk.img'; Id = 'SnapshotsNotSupported' }
    ) {
        $before = Get-TreeSnapshot $root
        $path = Join-Path $root "var/lib/libvirt/images/$Volume"
        { Remove-VolumeSnapshot -Volume $path @Params -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId "$Id,$($moduleErrorId.Remove)"
        Get-TreeSnapshot $root | Should -Be $before
    }
}

Describe 'Snapshots of an image in use' -Tag Oracle {
    BeforeAll {
        $script:root = New-SnapshotHost
        $script:disk = Join-Path $root 'var/lib/libvirt/images/disk.qcow2'
        New-VolumeSnapshot -Volume $disk -Name one | Out-Null
        $script:holder = $null
        if ($hasQemu) {
            # Interactive qemu-io keeps the image open read-write, with QEMU's locks, until its stdin closes.
            $start = [System.Diagnostics.ProcessStartInfo]::new((Get-Command qemu-io).Source)
            $start.ArgumentList.Add($disk)
            $start.RedirectStandardInput = $true
            $start.RedirectStandardOutput = $true
            $script:holder = [System.Diagnostics.Process]::Start($start)
            $deadline = [datetime]::UtcNow.AddSeconds(20)
            while ([datetime]::UtcNow -lt $deadline) {
                try { [KvmStorage.Core.Images.ImageLock]::EnsureNotInUse($disk, $true); Start-Sleep -Milliseconds 50 }
                catch { break }
            }
        }
    }

    AfterAll {
        if ($holder) {
            $holder.StandardInput.Close()
            if (-not $holder.WaitForExit(10000)) { $holder.Kill() }
        }
    }

    It 'is listed, but <Verb> refuses it with ImageInUse and changes nothing' -ForEach @(
        @{ Verb = 'New'; Command = { New-VolumeSnapshot -Volume $disk -Name two -ErrorAction Stop } }
        @{ Verb = 'Restore'; Command = { Restore-VolumeSnapshot -Volume $disk -Name one -Confirm:$false -ErrorAction Stop } }
        @{ Verb = 'Remove'; Command = { Remove-VolumeSnapshot -Volume $disk -Name one -Confirm:$false -ErrorAction Stop } }
    ) {
        if (-not $holder) { Set-ItResult -Skipped -Because 'qemu-io is not installed'; return }
        @(Get-VolumeSnapshot -Volume $disk).Name | Should -Be @('one')
        $before = Get-TreeSnapshot $root
        $Command | Should -Throw -ErrorId "ImageInUse,$($moduleErrorId[$Verb])"
        Get-TreeSnapshot $root | Should -Be $before
    }
}
