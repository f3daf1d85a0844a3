#Requires -Version 7.4
# A guest cluster whose L2 entry points at the image's own metadata (header, active L1, L2, refcount table, refcount
# block, snapshot table, snapshot L1): every writing command is compared with what qemu-img does on a copy of the same
# image. Where qemu refuses (qemu-img commit: "Preventing invalid write on metadata"), the module refuses with a typed
# error and leaves the file byte for byte unchanged. Where qemu writes into the damaged image anyway (rebase, snapshot,
# resize: it leaves the damage in place), the module refuses too, on purpose: it checks an image as qemu-img check
# would before writing. Where qemu repairs (check -r all raises the shared cluster's refcount), the module repairs to
# the same guest view, and a merge into the repaired image copies on write, as qemu's commit does.
# The header case is special: an L2 entry whose offset is 0 reads as unallocated (qcow2.rst, "Cluster mapping"), for
# qemu and the module alike, so nothing is refused and both give the same result.

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:hasQemu = [bool](Get-Command qemu-img -ErrorAction SilentlyContinue) -and [bool](Get-Command qemu-io -ErrorAction SilentlyContinue)

    # A 4 MiB qcow2 with data in guest clusters 0 and 1 whose first guest cluster's L2 entry is made to point at the
    # metadata cluster named by $Kind (the copied flag kept). With -Snapshot (always for the snapshot kinds), snapshot
    # s1 is taken first and the data written again, so the active L2 table is the active L1's own.
    function New-Crafted([string] $Kind, [string] $File, [switch] $Snapshot) {
        qemu-img create -q -f qcow2 $File 4M
        qemu-io -c 'write -q -P 0x11 0 128k' $File | Out-Null
        if ($Snapshot -or $Kind -in 'snapshot table', 'snapshot L1') {
            qemu-img snapshot -c s1 $File
            qemu-io -c 'write -q -P 0x33 0 128k' $File | Out-Null
        }
        $l1 = [long](Read-BE $File 40 8)
        $l2 = [long]((Read-BE $File $l1 8) -band 0x00fffffffffffe00)
        $target = switch ($Kind) {
            'header' { 0 }
            'L1' { $l1 }
            'L2' { $l2 }
            'refcount table' { [long](Read-BE $File 48 8) }
            'refcount block' { [long](Read-BE $File ([long](Read-BE $File 48 8)) 8) }
            'snapshot table' { [long](Read-BE $File 64 8) }
            'snapshot L1' { [long](Read-BE $File ([long](Read-BE $File 64 8)) 8) }
        }
        Write-BE $File $l2 (([ulong](Read-BE $File $l2 8) -band 0x8000000000000000) -bor [ulong]$target)
    }

    # Runs one operation with qemu-img on $File (the oracle); returns its exit code.
    function Invoke-QemuOperation([string] $Op, [string] $File, [string] $NewBacking) {
        switch ($Op) {
            'Merge-Volume' {
                $over = "$File.over.qcow2"
                qemu-img create -q -f qcow2 -b $File -F qcow2 $over
                qemu-io -c 'write -q -P 0x22 0 64k' $over | Out-Null
                & qemu-img commit -q $over *> $null
            }
            'Set-Volume' { & qemu-img rebase -q -b $NewBacking -F qcow2 $File *> $null }
            'New-VolumeSnapshot' { & qemu-img snapshot -c s2 $File *> $null }
            'Restore-VolumeSnapshot' { & qemu-img snapshot -a s1 $File *> $null }
            'Remove-VolumeSnapshot' { & qemu-img snapshot -d s1 $File *> $null }
            'Resize-Volume' { & qemu-img resize -q $File +1M *> $null }
            'Test-Volume' { & qemu-img check -q -r all $File *> $null }
        }
        $LASTEXITCODE
    }

    # Runs the same operation with the module on the pool volume $Name.
    function Invoke-ModuleOperation([string] $Op, [string] $Name) {
        $volume = "/var/lib/libvirt/images/$Name"
        switch ($Op) {
            'Merge-Volume' { Merge-Volume -Volume "$volume.over.qcow2" -Force -Confirm:$false -ErrorAction Stop | Out-Null }
            'Set-Volume' { Set-Volume -Volume $volume -BackingVolume /var/lib/libvirt/images/newbacking.qcow2 -Confirm:$false -ErrorAction Stop | Out-Null }
            'New-VolumeSnapshot' { New-VolumeSnapshot -Volume $volume -Name s2 -ErrorAction Stop | Out-Null }
            'Restore-VolumeSnapshot' { Restore-VolumeSnapshot -Volume $volume -Name s1 -Confirm:$false -ErrorAction Stop | Out-Null }
            'Remove-VolumeSnapshot' { Remove-VolumeSnapshot -Volume $volume -Name s1 -Confirm:$false -ErrorAction Stop | Out-Null }
            'Resize-Volume' { Resize-Volume -Volume $volume -Delta 1MB -Confirm:$false -ErrorAction Stop | Out-Null }
            'Test-Volume' { Test-Volume -Volume $volume -Repair All -ErrorAction Stop }
        }
    }

}

BeforeDiscovery {
    $kinds = 'header', 'L1', 'L2', 'refcount table', 'refcount block', 'snapshot table', 'snapshot L1'
    $ops = 'Merge-Volume', 'Set-Volume', 'New-VolumeSnapshot', 'Restore-VolumeSnapshot', 'Remove-VolumeSnapshot', 'Resize-Volume'
    # qemu's verdict: qemu-img commit refuses every base here; qemu-img snapshot -a aborts on an assertion
    # (qcow2_cache_discard) when the guest cluster is the active L2 table itself; everything else "succeeds".
    $script:refusals = foreach ($k in $kinds | Where-Object { $_ -ne 'header' }) {
        foreach ($o in $ops) { @{ Kind = $k; Op = $o; QemuFails = $o -eq 'Merge-Volume' -or ($k -eq 'L2' -and $o -eq 'Restore-VolumeSnapshot') } }
    }
    $script:headerCases = foreach ($o in $ops) { @{ Kind = 'header'; Op = $o } }
    $script:damaged = foreach ($k in $kinds | Where-Object { $_ -ne 'header' }) { @{ Kind = $k } }
    $script:repairs = foreach ($k in $kinds) { @{ Kind = $k } }
}

Describe 'A guest cluster mapped onto the image''s own metadata' -Tag Oracle {
    BeforeAll {
        $script:root = New-TestHostRoot
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
        $script:images = Join-Path $root 'var/lib/libvirt/images'
        $script:oracle = Join-Path $TestDrive 'oracle'
        New-Item -ItemType Directory -Path $oracle | Out-Null
        if ($hasQemu) {
            foreach ($dir in $images, $oracle) {
                qemu-img create -q -f qcow2 (Join-Path $dir 'newbacking.qcow2') 4M
                qemu-io -c 'write -q -P 0x44 64k 64k' (Join-Path $dir 'newbacking.qcow2') | Out-Null
            }
        }

        # One crafted image per case, copied for qemu, so both sides start from the same bytes.
        function script:New-Case([string] $Kind, [string] $Op) {
            $name = ("$Kind-$Op" -replace ' ', '-') + '.qcow2'
            $file = Join-Path $images $name
            New-Crafted $Kind $file -Snapshot:($Op -in 'Restore-VolumeSnapshot', 'Remove-VolumeSnapshot')
            $copy = Join-Path $oracle $name
            Copy-Item -LiteralPath $file $copy
            if ($Op -eq 'Merge-Volume') {
                qemu-img create -q -f qcow2 -b $file -F qcow2 "$file.over.qcow2"
                qemu-io -c 'write -q -P 0x22 0 64k' "$file.over.qcow2" | Out-Null
                qemu-img rebase -u -b "/var/lib/libvirt/images/$name" -F qcow2 "$file.over.qcow2"
            }
            [pscustomobject]@{ Name = $name; File = $file; Copy = $copy }
        }
    }

    It '<Op> on an image whose guest cluster lies on its <Kind>: qemu-img refuses or leaves it damaged; the module refuses, unchanged' -ForEach $refusals {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img/qemu-io are not installed'; return }
        $case = New-Case $Kind $Op
        & qemu-img check -q $case.Copy *> $null
        $LASTEXITCODE | Should -Be 2 -Because 'qemu-img check finds the crafted image corrupt'

        $qemuExit = Invoke-QemuOperation $Op $case.Copy (Join-Path $oracle 'newbacking.qcow2')
        if ($Op -eq 'Merge-Volume') {
            $qemuExit | Should -Not -Be 0 -Because 'qemu-img commit refuses: "Preventing invalid write on metadata"'
            (qemu-img info --output=json $case.Copy | ConvertFrom-Json).'format-specific'.data.corrupt | Should -BeTrue -Because 'qemu marks the base corrupt'
        }
        elseif ($QemuFails) {
            $qemuExit | Should -Not -Be 0 -Because 'qemu-img aborts on this image'
        }
        else {
            # qemu-img writes into the damaged image and the damage stays: the module's refusal is deliberately stricter.
            $qemuExit | Should -Be 0
            & qemu-img check -q $case.Copy *> $null
            $LASTEXITCODE | Should -Be 2 -Because 'what qemu-img did is no repair'
        }

        $files = @($case.File) + @(if ($Op -eq 'Merge-Volume') { "$($case.File).over.qcow2" })
        $hashes = $files | ForEach-Object { (Get-FileHash -LiteralPath $_).Hash }
        { Invoke-ModuleOperation $Op $case.Name } | Should -Throw -ErrorId 'ImageCheckFailed,*'
        $files | ForEach-Object { (Get-FileHash -LiteralPath $_).Hash } | Should -Be $hashes
    }

    It '<Op> on an image whose guest cluster has host offset 0 (the header): unallocated for both, same result as qemu-img' -ForEach $headerCases {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img/qemu-io are not installed'; return }
        $case = New-Case $Kind $Op
        Invoke-QemuOperation $Op $case.Copy (Join-Path $oracle 'newbacking.qcow2') | Should -Be 0
        Invoke-ModuleOperation $Op $case.Name
        if ($Op -eq 'Set-Volume') {
            # The module records the backing file as the host sees it (under the sandbox root); qemu-img needs the real path.
            qemu-img rebase -u -b (Join-Path $images 'newbacking.qcow2') -F qcow2 $case.File
        }
        foreach ($f in $case.Copy, $case.File) {
            & qemu-img check -q $f *> $null
            $LASTEXITCODE | Should -BeIn 0, 3 -Because 'no corruption (the crafted entry orphaned a data cluster: a leak)'
        }
        & qemu-img compare -q $case.Copy $case.File
        $LASTEXITCODE | Should -Be 0 -Because 'the guest sees the same data after qemu-img and after the module'
        $header = [long](Read-BE $case.File 0 4)
        $header | Should -Be 0x514649FB -Because 'the header was not overwritten'
    }

    It 'Optimize-Volume (no qemu-img equivalent) refuses an image whose guest cluster lies on its <Kind> (its own check, ImageCorrupt), unchanged' -ForEach $damaged {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img/qemu-io are not installed'; return }
        $case = New-Case $Kind 'Optimize-Volume'
        $hash = (Get-FileHash -LiteralPath $case.File).Hash
        { Optimize-Volume -Volume "/var/lib/libvirt/images/$($case.Name)" -Compact -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'ImageCorrupt,*'
        (Get-FileHash -LiteralPath $case.File).Hash | Should -Be $hash
    }

    It 'Test-Volume -Repair All on an image whose guest cluster lies on its <Kind> repairs as qemu-img check -r all does, and a merge into it then copies on write' -ForEach $repairs {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img/qemu-io are not installed'; return }
        $case = New-Case $Kind 'Test-Volume'
        Invoke-QemuOperation 'Test-Volume' $case.Copy | Should -Be 0
        $result = Invoke-ModuleOperation 'Test-Volume' $case.Name
        $result.Errors | Should -Be 0
        foreach ($f in $case.Copy, $case.File) {
            & qemu-img check -q $f *> $null
            $LASTEXITCODE | Should -Be 0 -Because "$f is consistent after the repair"
        }
        & qemu-img compare -q $case.Copy $case.File
        $LASTEXITCODE | Should -Be 0 -Because 'qemu and the module repair to the same guest view'

        # Once repaired, the shared cluster has refcount 2: a merge into it copies on write instead of overwriting the metadata.
        Invoke-QemuOperation 'Merge-Volume' $case.Copy | Should -Be 0
        qemu-img create -q -f qcow2 -b $case.File -F qcow2 "$($case.File).over.qcow2"
        qemu-io -c 'write -q -P 0x22 0 64k' "$($case.File).over.qcow2" | Out-Null
        qemu-img rebase -u -b "/var/lib/libvirt/images/$($case.Name)" -F qcow2 "$($case.File).over.qcow2"
        Invoke-ModuleOperation 'Merge-Volume' $case.Name
        foreach ($f in $case.Copy, $case.File) {
            & qemu-img check -q $f *> $null
            $LASTEXITCODE | Should -Be 0
        }
        & qemu-img compare -q $case.Copy $case.File
        $LASTEXITCODE | Should -Be 0
    }
}
