#Requires -Version 7.4
# The default views at 80 columns (a plain terminal, a mail, a ticket): every header stays on its line, and long
# names wrap instead of being cut, so two names that differ only at the end never print the same. And the exports:
# every object the module emits is small as JSON and holds values, not type names, as CSV.

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force

    $script:root = New-TestHostRoot
    New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
    New-StoragePool -Name a-rather-long-pool-name -Path /srv/some/very/long/folder/for/the/images/of/the/team -Build | Out-Null
    New-Volume default web-frontend-production-01-data.qcow2 -Size 8GB | Out-Null
    New-Volume default web-frontend-production-01-logs.qcow2 -Size 8GB | Out-Null
    New-Item -ItemType Directory (Join-Path $root 'etc/libvirt/qemu') -Force | Out-Null
    Copy-Item (Join-Path $PSScriptRoot '../../examples/kvm1.xml') (Join-Path $root 'etc/libvirt/qemu/kvm1.xml')
    Add-VMDisk -VMName kvm1 -Pool default -Name web-frontend-production-01-data.qcow2 | Out-Null
    Add-VMDisk -VMName kvm1 -Pool default -Name web-frontend-production-01-logs.qcow2 | Out-Null
    $logs = '/var/lib/libvirt/images/web-frontend-production-01-logs.qcow2'
    New-VolumeSnapshot -Volume $logs -Name before-the-big-upgrade-of-2026-a | Out-Null
    New-VolumeSnapshot -Volume $logs -Name before-the-big-upgrade-of-2026-b | Out-Null

    function Get-Rendered([scriptblock] $Objects) {
        # Format-Table picks the module's default table view; Out-String renders it as an 80-column host would.
        (& $Objects | Format-Table | Out-String -Width 80) -split "`r?`n"
    }
}

Describe 'Default table views at 80 columns' {
    It '<Type> keeps every header on one line and no line is wider than 80' -ForEach @(
        @{ Type = 'StoragePool'; Objects = { Get-StoragePool }; Headers = 'Name', 'Type', 'State', 'Capacity', 'Available', 'Path' }
        @{ Type = 'StorageVolume'; Objects = { Get-Volume -Pool default }; Headers = 'Name', 'Pool', 'Format', 'Capacity', 'Allocation', 'Backing' }
        @{ Type = 'VMDisk'; Objects = { Get-VMDisk kvm1 }; Headers = 'Target', 'Bus', 'Device', 'Format', 'Size', 'RO', 'Scope', 'Source' }
        @{ Type = 'VolumeSnapshot'; Objects = { Get-VolumeSnapshot -Volume /var/lib/libvirt/images/web-frontend-production-01-logs.qcow2 }; Headers = 'Id', 'Name', 'Date', 'VmClock', 'VmState', 'DiskSize' }
        @{ Type = 'ImageCheckResult'; Objects = { Test-Volume /var/lib/libvirt/images/web-frontend-production-01-logs.qcow2 }; Headers = @() }
        @{ Type = 'ImageCompareResult'; Objects = { Compare-Volume /var/lib/libvirt/images/web-frontend-production-01-logs.qcow2 /var/lib/libvirt/images/web-frontend-production-01-data.qcow2 }; Headers = @() }
        @{ Type = 'ImageOptimizeResult'; Objects = { Optimize-Volume /var/lib/libvirt/images/web-frontend-production-01-data.qcow2 -Confirm:$false }; Headers = @() }
        @{ Type = 'MapExtent'; Objects = { Get-VolumeMap /var/lib/libvirt/images/web-frontend-production-01-logs.qcow2 }; Headers = 'Start', 'Length', 'Data', 'Zero', 'Depth', 'Present', 'Offset', 'File' }
        @{ Type = 'ImageMeasurement'; Objects = { Measure-Volume /var/lib/libvirt/images/web-frontend-production-01-logs.qcow2 -Format vpc -Fixed }; Headers = 'Format', 'VirtualSize', 'Required', 'FullyAllocated', 'Path' }
    ) {
        $lines = Get-Rendered $Objects
        @($lines | Where-Object { $_.Length -gt 80 }) | Should -BeNullOrEmpty
        $header = $lines | Where-Object { $_ -match '\S' -and $_ -notmatch '^\s*(VMName|Volume):' } | Select-Object -First 1
        foreach ($h in $Headers) { $header | Should -Match "(^|\s)$h(\s|$)" -Because "the $h header stays whole on the header line: '$header'" }
        # Separator line: one run of dashes per header, none of them one character wide (a header printed downwards).
        $dashes = $lines | Where-Object { $_ -match '^[\s-]+$' -and $_ -match '-' } | Select-Object -First 1
        @([regex]::Matches($dashes, '-+') | Where-Object Length -LT 2) | Should -BeNullOrEmpty
        ($lines -join "`n") | Should -Not -Match '…' -Because 'values wrap instead of being cut'
    }

    It 'two long names that differ only at the end print differently (<Type>)' -ForEach @(
        @{ Type = 'StorageVolume'; Objects = { Get-Volume -Pool default }; A = '01-data.qcow2'; B = '01-logs.qcow2' }
        @{ Type = 'VMDisk'; Objects = { Get-VMDisk kvm1 }; A = '01-data.qcow2'; B = '01-logs.qcow2' }
        @{ Type = 'VolumeSnapshot'; Objects = { Get-VolumeSnapshot -Volume /var/lib/libvirt/images/web-frontend-production-01-logs.qcow2 }; A = '2026-a'; B = '2026-b' }
        @{ Type = 'StoragePool'; Objects = { Get-StoragePool }; A = 'the/team'; B = 'libvirt/images' }
    ) {
        # Wrapped cells continue on the next lines of the same column: the tails of both values are printed.
        $text = (Get-Rendered $Objects) -join "`n"
        $flat = $text -replace '\s+', ''
        $flat | Should -Match ([regex]::Escape(($A -replace '\s', '')))
        $flat | Should -Match ([regex]::Escape(($B -replace '\s', '')))
    }
}

Describe 'Exports of every object type' {
    It '<Type> as JSON (-Depth 10) is under 20 KB, and as CSV holds no type names' -ForEach @(
        @{ Type = 'StoragePool'; Objects = { Get-StoragePool default } }
        @{ Type = 'StorageVolume'; Objects = { Get-Volume default web-frontend-production-01-logs.qcow2 } }
        @{ Type = 'VMDisk'; Objects = { Get-VMDisk kvm1 -Target vda } }
        @{ Type = 'VolumeSnapshot'; Objects = { Get-VolumeSnapshot -Volume /var/lib/libvirt/images/web-frontend-production-01-logs.qcow2 | Select-Object -First 1 } }
        @{ Type = 'ImageCheckResult'; Objects = { Test-Volume /var/lib/libvirt/images/web-frontend-production-01-logs.qcow2 } }
        @{ Type = 'ImageCompareResult'; Objects = { Compare-Volume /var/lib/libvirt/images/web-frontend-production-01-logs.qcow2 /var/lib/libvirt/images/web-frontend-production-01-data.qcow2 } }
        @{ Type = 'ImageOptimizeResult'; Objects = { Optimize-Volume /var/lib/libvirt/images/web-frontend-production-01-data.qcow2 -Confirm:$false } }
        @{ Type = 'MapExtent'; Objects = { Get-VolumeMap /var/lib/libvirt/images/web-frontend-production-01-logs.qcow2 } }
        @{ Type = 'ImageMeasurement'; Objects = { Measure-Volume /var/lib/libvirt/images/web-frontend-production-01-logs.qcow2 -Format qcow2 } }
    ) {
        $o = & $Objects
        $o | Should -Not -BeNullOrEmpty
        $json = $o | ConvertTo-Json -Depth 10 -WarningAction SilentlyContinue
        $json.Length | Should -BeLessThan 20KB
        $csv = ($o | ConvertTo-Csv) -join "`n"
        $csv | Should -Not -Match '(KvmStorage|System)\.[A-Z][A-Za-z]+(\.|`)' -Because "CSV holds values: $csv"
    }

    It 'a volume''s lists export as their items' {
        $v = Get-Volume default web-frontend-production-01-logs.qcow2
        $row = $v | ConvertTo-Csv | ConvertFrom-Csv
        $row.Snapshots | Should -Be 'before-the-big-upgrade-of-2026-a, before-the-big-upgrade-of-2026-b'
        $row.AttachedTo | Should -Be 'kvm1'
        ($v | ConvertTo-Json -Depth 4 | ConvertFrom-Json).Chain.Count | Should -Be 1
    }
}

Describe 'One spelling of formats, pool types and states' {
    # libvirt's XML and qemu-img spell them in lower case; so does every object, view and export of the module, and a
    # JSON export holds the name, never an enum number.
    It '<Type>.<Property> is ''<Expected>'' in the object, the view, JSON and CSV' -ForEach @(
        @{ Type = 'StoragePool'; Property = 'Type'; Expected = 'dir'; Objects = { Get-StoragePool default } }
        @{ Type = 'StoragePool'; Property = 'State'; Expected = 'inactive'; Objects = { Get-StoragePool default } }
        @{ Type = 'StorageVolume'; Property = 'Format'; Expected = 'qcow2'; Objects = { Get-Volume default web-frontend-production-01-logs.qcow2 } }
        @{ Type = 'ImageInfo'; Property = 'Format'; Expected = 'qcow2'; Objects = { (Get-Volume default web-frontend-production-01-logs.qcow2).Image } }
        @{ Type = 'VMDisk'; Property = 'Format'; Expected = 'qcow2'; Objects = { Get-VMDisk kvm1 -Target vda } }
        @{ Type = 'ImageCheckResult'; Property = 'Format'; Expected = 'qcow2'; Objects = { Test-Volume /var/lib/libvirt/images/web-frontend-production-01-logs.qcow2 } }
        @{ Type = 'ImageOptimizeResult'; Property = 'Format'; Expected = 'qcow2'; Objects = { Optimize-Volume /var/lib/libvirt/images/web-frontend-production-01-data.qcow2 -Confirm:$false } }
    ) {
        $o = & $Objects
        $o.$Property | Should -BeExactly $Expected
        $o.$Property | Should -BeOfType [string]
        ($o | ConvertTo-Json -Depth 3 -WarningAction SilentlyContinue | ConvertFrom-Json).$Property | Should -BeExactly $Expected
        ($o | ConvertTo-Csv | ConvertFrom-Csv).$Property | Should -BeExactly $Expected
        ($o | Format-List -Property $Property | Out-String) | Should -MatchExactly "$Property\s*:\s*$Expected"
    }

    It 'a raw volume and a vmdk volume say raw and vmdk' {
        (New-Volume default spelled.img -Size 1MB).Format | Should -BeExactly 'raw'
        (New-Volume default spelled.vmdk -Size 1MB).Format | Should -BeExactly 'vmdk'
        (Get-Volume -Pool default -Name spelled.* | Format-Table | Out-String) | Should -MatchExactly '\braw\b'
    }
}
