#Requires -Version 7.4
# Set-Volume (rebase: change a qcow2 volume's backing file) against the built module, with qemu-img and qemu-io as
# the oracles: the guest view (qemu-img compare with a raw copy taken before) never changes unless -Unsafe says so.

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:hasQemu = [bool](Get-Command qemu-io -ErrorAction SilentlyContinue) -and [bool](Get-Command qemu-img -ErrorAction SilentlyContinue)
    $script:errorSuffix = 'KvmStorage.Commands.Volume.SetVolumeCommand'

    function Assert-QemuCheckClean([string] $Path) {
        $out = qemu-img check --output=json $Path 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "qemu-img check $Path said: $out"
    }

    function Save-GuestView([string] $Path) {
        $raw = "$Path.$([guid]::NewGuid().ToString('N').Substring(0, 6)).view"
        qemu-img convert -U -O raw $Path $raw
        $LASTEXITCODE | Should -Be 0
        $raw
    }

    function Assert-SameGuestView([string] $Raw, [string] $Path) {
        $out = qemu-img compare -U -f raw $Raw $Path 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "qemu-img compare said: $out"
    }

    # A golden image with data, a linked clone of it with its own writes, and a second golden image. Backing paths
    # are recorded relative (-RelativeBackingPath) so that qemu can follow them inside the test's host root.
    function New-GoldenHost {
        $root = New-TestHostRoot
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
        $images = Join-Path $root 'var/lib/libvirt/images'
        New-Volume -Pool default -Name golden.qcow2 -Size 4MB | Out-Null
        New-Volume -Pool default -Name golden2.qcow2 -Size 4MB | Out-Null
        New-Volume -Pool default -Name plain.img -Size 1MB -Format raw | Out-Null
        if ($hasQemu) {
            qemu-io -c 'write -P 0x11 0 2M' "$images/golden.qcow2" | Out-Null
            qemu-io -c 'write -P 0x22 1M 3M' "$images/golden2.qcow2" | Out-Null
        }
        New-Volume -Pool default -Name clone.qcow2 -BackingVolume (Get-Volume -Pool default -Name golden.qcow2) -RelativeBackingPath | Out-Null
        if ($hasQemu) { qemu-io -c 'write -P 0x33 512k 256k' "$images/clone.qcow2" | Out-Null }
        $root
    }
}

Describe 'Set-Volume -BackingPath' {
    BeforeEach {
        $script:root = New-GoldenHost
        $script:images = Join-Path $root 'var/lib/libvirt/images'
        $script:clone = Join-Path $images 'clone.qcow2'
    }

    It 'rebases a linked clone onto another golden image, keeping what the guest sees' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $view = Save-GuestView $clone
        $v = Get-Volume -Pool default -Name clone.qcow2 | Set-Volume -BackingPath (Get-Volume -Pool default -Name golden2.qcow2) -RelativeBackingPath -PassThru
        $v.BackingFile | Should -Be 'golden2.qcow2'
        $v.BackingPath | Should -Be '/var/lib/libvirt/images/golden2.qcow2'
        $v.BackingFormat | Should -Be 'qcow2'
        $v.Chain | Should -Be @('/var/lib/libvirt/images/clone.qcow2', '/var/lib/libvirt/images/golden2.qcow2')
        Assert-SameGuestView $view $clone
        Assert-QemuCheckClean $clone
        $info = qemu-img info -U --output=json $clone | ConvertFrom-Json
        $info.'full-backing-filename' | Should -Be (Join-Path $images 'golden2.qcow2')
    }

    It 'makes a clone standalone with $null, keeping what the guest sees' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $view = Save-GuestView $clone
        $v = Set-Volume -Volume $clone -BackingPath $null -PassThru
        $v.BackingFile | Should -BeNullOrEmpty
        $v.Chain | Should -HaveCount 1
        Assert-SameGuestView $view $clone
        Assert-QemuCheckClean $clone
        # The golden image can go now: nothing uses it.
        Remove-Volume -Pool default -Name golden.qcow2 -Confirm:$false
        Assert-SameGuestView $view $clone
    }

    It 'records a relative path with -RelativeBackingPath' {
        $v = Set-Volume -Volume $clone -BackingPath (Join-Path $images 'golden2.qcow2') -RelativeBackingPath -PassThru
        $v.BackingFile | Should -Be 'golden2.qcow2'
        $v.BackingPath | Should -Be '/var/lib/libvirt/images/golden2.qcow2'
    }

    It 'only rewrites the header with -Unsafe, for a golden image that was moved' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $view = Save-GuestView $clone
        New-Item -ItemType Directory (Join-Path $images 'golden') | Out-Null
        New-StoragePool -Name golden -Path /var/lib/libvirt/images/golden | Out-Null
        Move-Item (Join-Path $images 'golden.qcow2') (Join-Path $images 'golden/golden.qcow2')
        $length = (Get-Item $clone).Length
        { Set-Volume -Volume $clone -BackingPath (Join-Path $images 'golden/golden.qcow2') -ErrorAction Stop } |
            Should -Throw -ErrorId "RebaseCurrentBackingMissing,$errorSuffix"
        $v = Set-Volume -Volume $clone -BackingPath (Get-Volume -Pool golden -Name golden.qcow2) -Unsafe -RelativeBackingPath -PassThru
        $v.BackingFile | Should -Be 'golden/golden.qcow2'
        $v.BackingPath | Should -Be '/var/lib/libvirt/images/golden/golden.qcow2'
        (Get-Item $clone).Length | Should -Be $length
        Assert-SameGuestView $view $clone
        Assert-QemuCheckClean $clone
    }

    It 'changes nothing with -WhatIf' {
        $before = Get-TreeSnapshot $root
        Set-Volume -Volume $clone -BackingPath $null -WhatIf | Should -BeNullOrEmpty
        Set-Volume -Volume $clone -BackingPath (Join-Path $images 'golden2.qcow2') -WhatIf | Should -BeNullOrEmpty
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses <Case> and changes nothing' -ForEach @(
        @{ Case = 'a raw volume'; Volume = 'plain.img'; Backing = 'golden.qcow2'; Id = 'RebaseNotSupported' }
        @{ Case = 'a missing volume'; Volume = 'missing.qcow2'; Backing = 'golden.qcow2'; Id = 'ImageNotFound' }
        @{ Case = 'a missing backing file'; Volume = 'clone.qcow2'; Backing = 'missing.qcow2'; Id = 'ImageNotFound' }
        @{ Case = 'the volume itself'; Volume = 'clone.qcow2'; Backing = 'clone.qcow2'; Id = 'RebaseWouldLoop' }
        @{ Case = 'a loop through the chain'; Volume = 'golden.qcow2'; Backing = 'clone.qcow2'; Id = 'RebaseWouldLoop' }
        @{ Case = 'a raw file outside every pool'; Volume = 'clone.qcow2'; Backing = '../../../../etc/secret'; Id = 'BackingFileNotAllowed' }
        @{ Case = 'a folder'; Volume = 'clone.qcow2'; Backing = '../images'; Id = 'NotAVolume' }
    ) {
        New-Item -ItemType Directory (Join-Path $root 'etc') -Force | Out-Null
        Set-Content -Path (Join-Path $root 'etc/secret') -Value 'root:x:0:0' -NoNewline
        $before = Get-TreeSnapshot $root
        { Set-Volume -Volume (Join-Path $images $Volume) -BackingPath (Join-Path $images $Backing) -ErrorAction Stop } |
            Should -Throw -ErrorId "$Id,$errorSuffix"
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses a volume that a running QEMU holds (ImageInUse) and changes nothing' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-io is not installed'; return }
        $before = Get-TreeSnapshot $root
        # qemu-io keeps the image open (and locked) while it waits on its stdin.
        $psi = [Diagnostics.ProcessStartInfo]::new('qemu-io', @('-f', 'qcow2', $clone))
        $psi.RedirectStandardInput = $true
        $psi.RedirectStandardOutput = $true
        $qemu = [Diagnostics.Process]::Start($psi)
        try {
            $deadline = [DateTime]::UtcNow.AddSeconds(20)
            do { Start-Sleep -Milliseconds 100; $held = $null -ne (qemu-img info --output=json $clone 2>&1 | Select-String 'lock') }
            until ($held -or [DateTime]::UtcNow -gt $deadline)
            { Set-Volume -Volume $clone -BackingPath $null -ErrorAction Stop } | Should -Throw -ErrorId "ImageInUse,$errorSuffix"
        }
        finally { if (-not $qemu.HasExited) { $qemu.StandardInput.WriteLine('quit') }; $qemu.WaitForExit(10000) | Out-Null; $qemu.Dispose() }
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'stops on Ctrl+C (StopProcessing) and leaves the volume valid on its old backing file' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        # A raw base holding 2 GiB of data: making the clone standalone copies all of it into the clone, which takes
        # seconds. (Ranges both chains read as zeros are skipped without reading, so a sparse base would finish at once.)
        New-Volume -Pool default -Name big.img -Size 4GB -Format raw | Out-Null
        $stream = [IO.File]::OpenWrite((Join-Path $images 'big.img'))
        try {
            $block = [byte[]]::new(4MB); [Array]::Fill($block, [byte]0x5a)
            for ($i = 0; $i -lt 512; $i++) { $stream.Write($block, 0, $block.Length) }
        }
        finally { $stream.Dispose() }
        New-Volume -Pool default -Name big-clone.qcow2 -BackingVolume (Get-Volume -Pool default -Name big.img) -RelativeBackingPath | Out-Null
        $bigClone = Join-Path $images 'big-clone.qcow2'
        $emptyLength = (Get-Item $bigClone).Length
        $ps = [powershell]::Create()
        try {
            $null = $ps.AddScript("Import-Module '$env:KVMSTORAGE_TEST_MODULE'; `$env:KVMSTORAGE_ROOT = '$root'; Set-Volume -Volume '$bigClone' -BackingPath `$null")
            $async = $ps.BeginInvoke()
            # The stop lands once the copy has begun (the clone grows), keyed to the work rather than to a clock.
            $deadline = [DateTime]::UtcNow.AddSeconds(60)
            while (-not $async.IsCompleted -and (Get-Item $bigClone).Length -le $emptyLength + 1MB -and [DateTime]::UtcNow -lt $deadline) { Start-Sleep -Milliseconds 10 }
            $ps.Stop()
            try { $null = $ps.EndInvoke($async) } catch { $_.Exception.InnerException.GetType().Name | Should -Be 'PipelineStoppedException' }
            $ps.InvocationStateInfo.State | Should -Be 'Stopped'
        }
        finally { $ps.Dispose() }
        (Get-Volume -Pool default -Name big-clone.qcow2).BackingPath | Should -Be '/var/lib/libvirt/images/big.img'
        Assert-QemuCheckClean $bigClone
    }
}

Describe 'Set-Volume -Compat, -LazyRefcounts, -RefcountBits (amend)' {
    BeforeEach {
        $script:root = New-GoldenHost
        $script:images = Join-Path $root 'var/lib/libvirt/images'
        $script:golden = Join-Path $images 'golden.qcow2'
        $script:clone = Join-Path $images 'clone.qcow2'
        if ($hasQemu) { qemu-io -c 'write -z 1M 64k' -c 'write -z -u 3M 64k' $golden | Out-Null }
    }

    It 'downgrades a golden image with zero clusters to compat 0.10; it and its clone read the same' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $goldenView = Save-GuestView $golden
        $cloneView = Save-GuestView $clone
        $v = Set-Volume -Volume $golden -Compat 0.10 -PassThru
        $v.Compat | Should -Be '0.10'
        Assert-QemuCheckClean $golden
        (qemu-img info -U --output=json $golden | ConvertFrom-Json).'format-specific'.data.compat | Should -Be '0.10'
        Assert-SameGuestView $goldenView $golden
        Assert-SameGuestView $cloneView $clone
    }

    It 'widens the refcounts and turns lazy refcounts on, then back off and up to 16 bits' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $view = Save-GuestView $golden
        Get-Volume -Pool default -Name golden.qcow2 | Set-Volume -RefcountBits 64 -LazyRefcounts
        $data = (qemu-img info -U --output=json $golden | ConvertFrom-Json).'format-specific'.data
        $data.'refcount-bits' | Should -Be 64
        $data.'lazy-refcounts' | Should -BeTrue
        Assert-QemuCheckClean $golden
        Set-Volume -Pool default -Name golden.qcow2 -RefcountBits 16 -LazyRefcounts:$false
        $data = (qemu-img info -U --output=json $golden | ConvertFrom-Json).'format-specific'.data
        $data.'refcount-bits' | Should -Be 16
        $data.'lazy-refcounts' | Should -BeFalse
        Assert-QemuCheckClean $golden
        Assert-SameGuestView $view $golden
    }

    It 'amends, then rebases, when given both' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $view = Save-GuestView $clone
        $v = Set-Volume -Volume $clone -Compat 0.10 -BackingPath (Join-Path $images 'golden2.qcow2') -RelativeBackingPath -PassThru
        $v.Compat | Should -Be '0.10'
        $v.BackingFile | Should -Be 'golden2.qcow2'
        Assert-QemuCheckClean $clone
        Assert-SameGuestView $view $clone
    }

    It 'changes nothing with -WhatIf' {
        $before = Get-TreeSnapshot $root
        Set-Volume -Volume $golden -Compat 0.10 -WhatIf | Should -BeNullOrEmpty
        Set-Volume -Volume $golden -RefcountBits 64 -LazyRefcounts -WhatIf | Should -BeNullOrEmpty
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses <Case> and changes nothing' -ForEach @(
        @{ Case = 'lazy refcounts with compat 0.10'; Volume = 'golden.qcow2'; Params = @{ Compat = '0.10'; LazyRefcounts = $true }; Id = 'InvalidAmendOptions' }
        @{ Case = 'compat 0.10 with 8-bit refcounts'; Volume = 'golden.qcow2'; Params = @{ Compat = '0.10'; RefcountBits = '8' }; Id = 'InvalidAmendOptions' }
        @{ Case = 'a raw volume'; Volume = 'plain.img'; Params = @{ Compat = '0.10' }; Id = 'AmendNotSupported' }
        @{ Case = 'nothing to change'; Volume = 'golden.qcow2'; Params = @{}; Id = 'NothingToChange' }
        @{ Case = 'a missing volume'; Volume = 'missing.qcow2'; Params = @{ Compat = '0.10' }; Id = 'ImageNotFound' }
    ) {
        $before = Get-TreeSnapshot $root
        { Set-Volume -Volume (Join-Path $images $Volume) @Params -ErrorAction Stop } | Should -Throw -ErrorId "$Id,$errorSuffix"
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses 1-bit refcounts for an image whose snapshot shares clusters (AmendNotPossible)' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        New-VolumeSnapshot -Volume $golden -Name s1 | Out-Null
        $before = Get-TreeSnapshot $root
        { Set-Volume -Volume $golden -RefcountBits 1 -ErrorAction Stop } | Should -Throw -ErrorId "AmendNotPossible,$errorSuffix"
        Get-TreeSnapshot $root | Should -Be $before
    }
}
