#Requires -Version 7.4
# Encrypted (LUKS) volumes from the user's side, against the built module on a scratch host root: made, converted,
# copied, imported, exported, compared, checked and snapshotted with a passphrase, with qemu-img and qemu-io as the
# oracles; the refusals change nothing; the passphrase reaches no message, stream or file; libvirt secrets written
# offline as libvirtd writes them, and Add-VMDisk giving the disk its <encryption>. The daemon side (a TCG guest
# that starts with an encrypted disk) is at the end, tagged Daemon.

BeforeDiscovery {
    Import-Module (Join-Path $PSScriptRoot 'LibvirtDaemon.psm1') -Force
    $script:emulatorSkip = Get-TestLibvirtdSkipReason -NeedEmulator
    $script:noQemu = -not ((Get-Command qemu-io -ErrorAction SilentlyContinue) -and (Get-Command qemu-img -ErrorAction SilentlyContinue))
}

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    Import-Module (Join-Path $PSScriptRoot 'LibvirtDaemon.psm1') -Force
    $script:plain = 'Tr0ub4dor&3 passphrase'
    $script:pw = ConvertTo-SecureString $plain -AsPlainText -Force
    $script:other = ConvertTo-SecureString 'a different one' -AsPlainText -Force
    $script:kvm1Xml = Join-Path $PSScriptRoot '../../examples/kvm1.xml'

    function New-EncryptedHost {
        $root = New-TestHostRoot
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build
        $root
    }

    function ImageOpts([string] $Path, [string] $Secret = 's0') {
        $info = qemu-img info -U --output=json $Path | ConvertFrom-Json
        if ($info.format -eq 'luks') { "driver=luks,file.filename=$Path,key-secret=$Secret" }
        else { "driver=qcow2,file.filename=$Path,encrypt.key-secret=$Secret" }
    }

    # qemu-img compare of an encrypted image (opened with $Pass) and another image (plain or encrypted, same pass).
    function Assert-QemuEqual([string] $Encrypted, [string] $Other, [string] $Pass = $plain) {
        $second = if ((qemu-img info -U --output=json $Other | ConvertFrom-Json).encrypted) { ImageOpts $Other } else { "driver=$((qemu-img info -U --output=json $Other | ConvertFrom-Json).format),file.filename=$Other" }
        $out = qemu-img compare --object "secret,id=s0,data=$Pass" --image-opts (ImageOpts $Encrypted) $second 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "qemu-img compare said: $out"
    }

    function Write-Pattern([string] $Path, [string] $Command) {
        $out = qemu-io --object "secret,id=s0,data=$plain" --image-opts (ImageOpts $Path) -c $Command 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "$out"
    }
}

Describe 'Encrypted volumes' -Skip:$noQemu {
    BeforeEach {
        $script:root = New-EncryptedHost
        $script:images = Join-Path $root 'var/lib/libvirt/images'
    }

    It 'creates LUKS-in-qcow2 and LUKS-file volumes that qemu opens with the passphrase, and Get-Volume shows the encryption' {
        $q = New-Volume default secure.qcow2 -Size 16MB -Encrypt -Passphrase $pw -IterationTime 10
        $l = New-Volume default secure.luks -Size 8MB -Encrypt -Passphrase $pw -IterationTime 10
        foreach ($v in $q, $l) {
            $v.Encrypted | Should -BeTrue
            $v.Encryption | Should -Be 'luks'
            $info = qemu-img info -U --output=json (Join-Path $images $v.Name) | ConvertFrom-Json
            $info.encrypted | Should -BeTrue
        }
        $l.Format | Should -Be 'luks'
        $l.Capacity | Should -Be 8MB
        (Get-Volume default secure.qcow2).Encrypted | Should -BeTrue
        (Get-Volume default secure.qcow2 | Format-List | Out-String) | Should -Match 'Encryption\s*:\s*luks'

        Write-Pattern (Join-Path $images secure.qcow2) 'write -P 0x3c 1M 2M'
        $out = qemu-img check --object "secret,id=s0,data=$plain" --image-opts (ImageOpts (Join-Path $images secure.qcow2)) 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "$out"
        Test-Volume /var/lib/libvirt/images/secure.qcow2 -Passphrase $pw | ForEach-Object { $_.Errors | Should -Be 0 }

        # A LUKS file's check (qemu-img has none) is its header and key slots: sound here, then with slot 0's stripes damaged.
        (Test-Volume /var/lib/libvirt/images/secure.luks).Passed | Should -BeTrue
        $fs = [IO.File]::OpenWrite((Join-Path $images secure.luks)); $fs.Position = 208 + 44 + 3; $fs.WriteByte(1); $fs.Dispose()
        $damaged = Test-Volume /var/lib/libvirt/images/secure.luks
        $damaged.Passed | Should -BeFalse
        "$($damaged.Corruptions)" | Should -Match 'stripes'
        { Get-Volume default secure.luks | Convert-Volume -Format raw -Name x.raw -Passphrase $pw -ErrorAction Stop } | Should -Throw -ErrorId 'LuksHeaderInvalid,*' 
    }

    It 'converts, copies, exports and imports with the passphrase, and the outputs compare equal in qemu' {
        $src = New-Volume default data.raw -Size 12MB
        $bytes = [byte[]]::new(3MB); [Random]::new(5).NextBytes($bytes)
        $fs = [IO.File]::OpenWrite((Join-Path $images data.raw)); $fs.Position = 4MB; $fs.Write($bytes); $fs.Dispose()

        $enc = Convert-Volume /var/lib/libvirt/images/data.raw -Format qcow2 -Name data-enc.qcow2 -Encrypt -Passphrase $pw -IterationTime 10
        $enc.Encrypted | Should -BeTrue
        Assert-QemuEqual (Join-Path $images data-enc.qcow2) (Join-Path $images data.raw)
        # No plaintext in the encrypted file.
        $stored = [IO.File]::ReadAllBytes((Join-Path $images data-enc.qcow2))
        [Linq.Enumerable]::SequenceEqual([byte[]]$stored[0..63], [byte[]]$bytes[0..63]) | Should -BeFalse
        ([Convert]::ToHexString($stored)).Contains([Convert]::ToHexString($bytes, 1000, 48)) | Should -BeFalse

        # A copy of an encrypted volume stays encrypted, here under another passphrase.
        $copy = Copy-Volume /var/lib/libvirt/images/data-enc.qcow2 -Name data-copy.luks -Passphrase $pw -NewPassphrase $other -IterationTime 10
        $copy.Encryption | Should -Be 'luks'
        $copy.Format | Should -Be 'luks'
        Assert-QemuEqual (Join-Path $images data-copy.luks) (Join-Path $images data.raw) -Pass 'a different one'
        Compare-Volume /var/lib/libvirt/images/data.raw /var/lib/libvirt/images/data-copy.luks -Passphrase $other | ForEach-Object { $_.Identical | Should -BeTrue }

        # Exported in the clear, with a warning that says so.
        $out = Join-Path $TestDrive "export-$([guid]::NewGuid()).raw"
        $null = Export-Volume /var/lib/libvirt/images/data-enc.qcow2 -Destination $out -Format raw -Passphrase $pw -WarningVariable warned 3>$null
        "$warned" | Should -Match 'in the clear'
        $out2 = qemu-img compare -f raw -F raw $out (Join-Path $images data.raw) 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "$out2"

        # Imported from a LUKS file qemu made, re-encrypted under a new passphrase.
        $qemuLuks = Join-Path $TestDrive "q-$([guid]::NewGuid()).luks"
        qemu-img create -q --object "secret,id=s0,data=$plain" -f luks -o key-secret=s0,iter-time=10 $qemuLuks 4M 2>&1 | Out-Null
        if ($LASTEXITCODE) { qemu-img create -q --object "secret,id=s0,data=$plain" -f luks -o key-secret=s0,iter-time=50 $qemuLuks 4M | Out-Null }
        Write-Pattern $qemuLuks 'write -P 0x7e 0 1M'
        $imported = Import-Volume -Path $qemuLuks -Pool default -Name imported.qcow2 -Passphrase $pw -Encrypt -NewPassphrase $other -IterationTime 10
        $imported.Encrypted | Should -BeTrue
        $o = qemu-img compare --object "secret,id=a,data=$plain" --object 'secret,id=b,data=a different one' --image-opts "driver=luks,file.filename=$qemuLuks,key-secret=a" "driver=qcow2,file.filename=$(Join-Path $images imported.qcow2),encrypt.key-secret=b" 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "$o"
    }

    It 'takes, lists, reverts and deletes snapshots of an encrypted volume given its passphrase' {
        $null = New-Volume default snap.qcow2 -Size 8MB -Encrypt -Passphrase $pw -IterationTime 10
        $disk = Join-Path $images snap.qcow2
        Write-Pattern $disk 'write -P 0x11 0 64k'
        $null = New-VolumeSnapshot /var/lib/libvirt/images/snap.qcow2 -Name before -Passphrase $pw
        Write-Pattern $disk 'write -P 0x22 0 64k'
        Restore-VolumeSnapshot /var/lib/libvirt/images/snap.qcow2 -Name before -Passphrase $pw -Confirm:$false
        $read = qemu-io --object "secret,id=s0,data=$plain" --image-opts (ImageOpts $disk) -c 'read -P 0x11 0 64k' 2>&1
        "$read" | Should -Not -Match 'Pattern verification failed'
        $LASTEXITCODE | Should -Be 0
        Remove-VolumeSnapshot /var/lib/libvirt/images/snap.qcow2 -Name before -Passphrase $pw -Confirm:$false
        @(Get-VolumeSnapshot /var/lib/libvirt/images/snap.qcow2).Count | Should -Be 0
    }

    It 'refuses a wrong or missing passphrase and bad combinations with typed errors, changing nothing' {
        $null = New-Volume default locked.qcow2 -Size 4MB -Encrypt -Passphrase $pw -IterationTime 10
        $null = New-Volume default plain.qcow2 -Size 4MB
        $before = Get-TreeSnapshot $root
        $cases = @(
            @{ Id = 'WrongPassphrase'; Run = { Convert-Volume /var/lib/libvirt/images/locked.qcow2 -Format raw -Name out.raw -Passphrase $other } }
            @{ Id = 'PassphraseRequired'; Run = { Convert-Volume /var/lib/libvirt/images/locked.qcow2 -Format raw -Name out.raw } }
            @{ Id = 'WrongPassphrase'; Run = { New-VolumeSnapshot /var/lib/libvirt/images/locked.qcow2 -Name s -Passphrase $other } }
            @{ Id = 'WrongPassphrase'; Run = { Test-Volume /var/lib/libvirt/images/locked.qcow2 -Passphrase $other } }
            @{ Id = 'WrongPassphrase'; Run = { Compare-Volume /var/lib/libvirt/images/plain.qcow2 /var/lib/libvirt/images/locked.qcow2 -Passphrase $other } }
            @{ Id = 'PassphraseRequired'; Run = { Copy-Volume /var/lib/libvirt/images/locked.qcow2 -Name c.qcow2 } }
            @{ Id = 'PassphraseRequired'; Run = { New-Volume default x.qcow2 -Size 1MB -Encrypt } }
            @{ Id = 'InvalidEncryptionOptions'; Run = { New-Volume default x.luks -Size 1MB } }
            @{ Id = 'InvalidEncryptionOptions'; Run = { New-Volume default x.vmdk -Size 1MB -Encrypt -Passphrase $pw } }
            @{ Id = 'InvalidEncryptionOptions'; Run = { Convert-Volume /var/lib/libvirt/images/plain.qcow2 -Format raw -Name n.raw -NewPassphrase $pw } }
            @{ Id = 'InvalidConvertOptions'; Run = { Convert-Volume /var/lib/libvirt/images/plain.qcow2 -Format qcow2 -Name z.qcow2 -Encrypt -Passphrase $pw -Compress } }
            @{ Id = 'InvalidEncryptionOptions'; Run = { New-VolumeSecret /var/lib/libvirt/images/plain.qcow2 -Passphrase $pw } }
        )
        foreach ($case in $cases) {
            $err = $null
            try { & $case.Run -ErrorAction Stop 3>$null | Out-Null } catch { $err = $_ }
            $err | Should -Not -BeNullOrEmpty -Because "$($case.Run) must fail"
            $err.FullyQualifiedErrorId | Should -BeLike "$($case.Id),*" -Because "$($case.Run)"
            $err.TargetObject | Should -Not -BeNullOrEmpty
            # Messages name files as the host sees them, not this machine's sandbox path.
            "$err" | Should -Not -Match ([regex]::Escape($root))
        }
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'never shows the passphrase in any stream, error or file' {
        $all = & {
            New-Volume default leak.qcow2 -Size 2MB -Encrypt -Passphrase $pw -IterationTime 10 -Verbose -Debug
            Convert-Volume /var/lib/libvirt/images/leak.qcow2 -Format raw -Name leak.luks -Encrypt -Passphrase $pw -IterationTime 10 -Verbose -Debug
            Convert-Volume /var/lib/libvirt/images/leak.qcow2 -Format raw -Name bad.raw -Passphrase $other -Verbose -ErrorAction SilentlyContinue -ErrorVariable e1
            New-VolumeSecret /var/lib/libvirt/images/leak.qcow2 -Passphrase $pw -Verbose
            New-VolumeSecret /var/lib/libvirt/images/leak.luks -Passphrase $other -Verbose -ErrorAction SilentlyContinue -ErrorVariable e2
            $e1; $e2
        } *>&1 | Out-String -Width 500
        $all | Should -Not -BeNullOrEmpty
        $all | Should -Not -Match ([regex]::Escape($plain))
        $all | Should -Not -Match 'a different one'
        foreach ($e in @($e1) + @($e2)) {
            ($e | Format-List * -Force | Out-String) | Should -Not -Match ([regex]::Escape($plain))
            ($e.Exception | Format-List * -Force | Out-String) | Should -Not -Match 'a different one'
        }
        # Nowhere under the root in the clear: only the secret's value file holds it, base64 as libvirt keeps it.
        foreach ($f in Get-ChildItem -Recurse -File -Force $root) {
            # Latin-1 maps each byte to one character, so the (ASCII) passphrase is found wherever its bytes are.
            $content = [Text.Encoding]::Latin1.GetString([IO.File]::ReadAllBytes($f.FullName))
            $content.Contains($plain) | Should -BeFalse -Because $f.FullName
        }
        # This process never started another one that could have carried it on a command line.
        Get-ChildItem /proc -Directory -ErrorAction SilentlyContinue | Where-Object Name -Match '^\d+$' | ForEach-Object {
            $cmd = Get-Content -Raw -ErrorAction SilentlyContinue "/proc/$($_.Name)/cmdline"
            if ($cmd) { $cmd | Should -Not -Match ([regex]::Escape($plain)) }
        }
    }

    It 'writes the libvirt secret files as libvirtd does, lists and removes them, and refuses a second one' {
        $null = New-Volume default vm.luks -Size 4MB -Encrypt -Passphrase $pw -IterationTime 10
        $secret = Get-Volume default vm.luks | New-VolumeSecret -Passphrase $pw -Description 'vm data disk'
        $secret.Usage | Should -Be '/var/lib/libvirt/images/vm.luks'
        $secret.UsageType | Should -Be 'volume'
        $secret.Private | Should -BeTrue
        $folder = Join-Path $root 'etc/libvirt/secrets'
        (Get-Item $folder).UnixMode | Should -Be 'drwx------'
        $xml = Join-Path $folder "$($secret.Uuid).xml"
        $value = Join-Path $folder "$($secret.Uuid).base64"
        (Get-Item $xml).UnixMode | Should -Be '-rw-------'
        (Get-Item $value).UnixMode | Should -Be '-rw-------'
        [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String((Get-Content -Raw $value))) | Should -BeExactly $plain
        ([xml](Get-Content -Raw $xml)).secret.usage.volume | Should -Be '/var/lib/libvirt/images/vm.luks'
        if (Get-Command virt-xml-validate -ErrorAction SilentlyContinue) {
            $o = virt-xml-validate $xml secret 2>&1
            $LASTEXITCODE | Should -Be 0 -Because "$o"
        }
        (Get-VolumeSecret /var/lib/libvirt/images/vm.luks).Uuid | Should -Be $secret.Uuid
        (Get-VolumeSecret).Uuid | Should -Contain $secret.Uuid
        (Get-VolumeSecret | Format-Table | Out-String) | Should -Match 'vm\.luks'

        { New-VolumeSecret /var/lib/libvirt/images/vm.luks -Passphrase $pw -ErrorAction Stop } | Should -Throw -ErrorId 'SecretExists,*'
        Get-VolumeSecret -Uuid $secret.Uuid | Remove-VolumeSecret -Confirm:$false
        Test-Path $xml, $value | Should -Be @($false, $false)
        { Get-VolumeSecret /var/lib/libvirt/images/vm.luks -ErrorAction Stop } | Should -Throw -ErrorId 'SecretNotFound,*'
    }

    It 'gives an encrypted disk its <encryption> and secret in Add-VMDisk, and refuses one without a secret' {
        $qemu = Join-Path $root 'etc/libvirt/qemu'
        New-Item -ItemType Directory -Force $qemu | Out-Null
        Copy-Item $kvm1Xml (Join-Path $qemu 'kvm1.xml')
        $null = New-Volume default guest.luks -Size 4MB -Encrypt -Passphrase $pw -IterationTime 10
        $null = New-Volume default guest.qcow2 -Size 4MB -Encrypt -Passphrase $pw -IterationTime 10
        $before = Get-TreeSnapshot $root
        { Get-Volume default guest.luks | Add-VMDisk -VMName kvm1 -ErrorAction Stop } | Should -Throw -ErrorId 'SecretNotFound,*'
        Get-TreeSnapshot $root | Should -Be $before

        $s1 = New-VolumeSecret /var/lib/libvirt/images/guest.luks -Passphrase $pw
        $s2 = New-VolumeSecret /var/lib/libvirt/images/guest.qcow2 -Passphrase $pw
        $d1 = Get-Volume default guest.luks | Add-VMDisk -VMName kvm1
        $d2 = Get-Volume default guest.qcow2 | Add-VMDisk -VMName kvm1
        $dom = [xml](Get-Content -Raw (Join-Path $qemu 'kvm1.xml'))
        $disk1 = $dom.domain.devices.disk | Where-Object { $_.target.dev -eq $d1.Target }
        $disk1.driver.type | Should -Be 'raw'
        $disk1.source.encryption.format | Should -Be 'luks'
        $disk1.source.encryption.secret.type | Should -Be 'passphrase'
        $disk1.source.encryption.secret.uuid | Should -Be "$($s1.Uuid)"
        $disk2 = $dom.domain.devices.disk | Where-Object { $_.target.dev -eq $d2.Target }
        $disk2.driver.type | Should -Be 'qcow2'
        $disk2.source.encryption.secret.uuid | Should -Be "$($s2.Uuid)"
        if (Get-Command virt-xml-validate -ErrorAction SilentlyContinue) {
            $o = virt-xml-validate (Join-Path $qemu 'kvm1.xml') domain 2>&1
            $LASTEXITCODE | Should -Be 0 -Because "$o"
        }
    }
}

Describe 'An encrypted disk on libvirtd' -Tag Daemon -Skip:([bool]$emulatorSkip -or $noQemu) {
    BeforeAll {
        $script:root = New-TestHostRoot -Name luksdaemon
        $script:daemon = Start-TestLibvirtd -Root $root
        $script:conn = Connect-LibvirtHost -Uri $daemon.Uri
        function Invoke-Virsh { $out = & virsh -c $daemon.Uri @args 2>&1; if ($LASTEXITCODE) { throw "virsh $args failed: $out" }; $out | ForEach-Object { "$_".Trim() } | Where-Object { $_ } }
        $script:poolPath = Join-Path $root 'images/luks'
        New-StoragePool -Name lukspool -Path $poolPath -Build
        Start-StoragePool lukspool
    }
    AfterAll {
        Get-LibvirtHost | Disconnect-LibvirtHost
        if ($daemon) { Stop-TestLibvirtd $daemon }
    }

    It 'defines the secret through the API, attaches the volume to a TCG guest that starts, and vol-dumpxml shows the encryption' {
        $vol = New-Volume -Pool lukspool -Name guest.qcow2 -Size 16MB -Encrypt -Passphrase $pw -IterationTime 10
        $raw = New-Volume -Pool lukspool -Name guest.luks -Size 8MB -Encrypt -Passphrase $pw -IterationTime 10
        $secret = $vol | New-VolumeSecret -Passphrase $pw
        $rawSecret = $raw | New-VolumeSecret -Passphrase $pw
        (Invoke-Virsh secret-list) -join "`n" | Should -Match ([regex]::Escape("$($secret.Uuid)"))
        (Invoke-Virsh secret-dumpxml "$($secret.Uuid)") -join "`n" | Should -Match ([regex]::Escape($vol.Path))
        # Private: libvirt never hands the value back.
        { Invoke-Virsh secret-get-value "$($secret.Uuid)" } | Should -Throw
        (Get-VolumeSecret $vol).Uuid | Should -Be $secret.Uuid

        (Invoke-Virsh vol-dumpxml --pool lukspool guest.qcow2) -join "`n" | Should -Match "<encryption format=.luks.>"
        (Invoke-Virsh vol-dumpxml --pool lukspool guest.luks) -join "`n" | Should -Match "<encryption format=.luks.>"

        $xml = Join-Path $root 'luks-vm.xml'
        Set-Content -Path $xml -Value @"
<domain type='qemu'>
  <name>kvmstorage-luks</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>
"@
        Invoke-Virsh define $xml | Out-Null
        $disk = $vol | Add-VMDisk -VMName kvmstorage-luks
        $null = $raw | Add-VMDisk -VMName kvmstorage-luks
        (Invoke-Virsh dumpxml --inactive kvmstorage-luks) -join "`n" | Should -Match ([regex]::Escape("uuid='$($secret.Uuid)'"))
        Invoke-Virsh start kvmstorage-luks | Out-Null
        try {
            (Invoke-Virsh domstate kvmstorage-luks) | Should -Contain 'running'
            (Invoke-Virsh domblklist kvmstorage-luks) -join "`n" | Should -Match "$($disk.Target)\s+\S*guest\.qcow2"
            # qemu was given the secret object, never the passphrase on its command line.
            $qemuPid = (Get-Content -Raw (Join-Path $root 'run/libvirt/qemu/kvmstorage-luks.pid')).Trim()
            (Get-Content -Raw "/proc/$qemuPid/cmdline") | Should -Not -Match ([regex]::Escape($plain))
        }
        finally { Invoke-Virsh destroy kvmstorage-luks | Out-Null }

        Remove-VolumeSecret $rawSecret.Uuid -Confirm:$false
        (Invoke-Virsh secret-list) -join "`n" | Should -Not -Match ([regex]::Escape("$($rawSecret.Uuid)"))
        { Remove-VolumeSecret $rawSecret.Uuid -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'SecretNotFound,*'
    }
}
