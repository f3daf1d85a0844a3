using System.Management.Automation;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Convert;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>Import-Volume: converts an image file from anywhere (qcow2, raw, vmdk, vdi, vhd, vhdx…) into a new volume of a pool.</summary>
[Cmdlet(VerbsData.Import, "Volume", SupportsShouldProcess = true)]
[OutputType(typeof(StorageVolume))]
public sealed class ImportVolumeCommand : KvmCmdlet
{
    /// <summary>The image file to import, taken literally; Get-ChildItem output binds through PSPath.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("PSPath", "LiteralPath", "LP")]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = string.Empty;

    /// <summary>The pool that receives the new volume.</summary>
    [Parameter(Mandatory = true, Position = 1)]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public PoolReference Pool { get; set; } = null!;

    /// <summary>Name of the new volume; default: the file's base name with the format's extension.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Name { get; set; }

    /// <summary>
    /// Format of the new volume: qcow2, raw, vmdk, vhdx, vpc or vdi; default: the one -Name's extension says (.qcow2,
    /// .raw or .img, .vmdk, .vhdx, .vhd, .vdi), else qcow2. A contradicting extension is refused.
    /// </summary>
    [Parameter]
    [ValidateSet("raw", "qcow2", "vmdk", "vhdx", "vpc", "vdi")]
    public string? Format { get; set; }

    /// <summary>qcow2: compress clusters.</summary>
    [Parameter]
    public SwitchParameter Compress { get; set; }

    /// <summary>Encrypt the output with LUKS (qcow2 with a LUKS header inside, or raw as a LUKS file); its passphrase is -NewPassphrase, else -Passphrase.</summary>
    [Parameter]
    public SwitchParameter Encrypt { get; set; }

    /// <summary>The passphrase of an encrypted source (and of the output with -Encrypt, unless -NewPassphrase is given).</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    /// <summary>With -Encrypt: the output's own passphrase, when it is not the source's.</summary>
    [Parameter]
    public System.Security.SecureString? NewPassphrase { get; set; }

    /// <summary>With -Encrypt: milliseconds PBKDF2 should take to open the output's key slot (qemu's iter-time; default 2000).</summary>
    [Parameter]
    [ValidateRange(10, 60000)]
    public int IterationTime { get; set; } = 2000;

    protected override void ProcessRecord()
    {
        string file = GetUnresolvedProviderPathFromPSPath(Path);
        RunForItem(file, () =>
        {
            if (!File.Exists(file))
            {
                throw new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.NotFound, ImageErrorIds.ImageNotFound, $"The image file '{file}' does not exist.", file);
            }

            ImageFormat format = Name is null
                ? ConvertParameters.ParseFormat(Format, ImageFormat.Qcow2)
                : VolumeNames.FormatFor(Name, ConvertParameters.ParseFormat(Format), ImageFormat.Qcow2);
            string name = Name ?? System.IO.Path.GetFileNameWithoutExtension(file) + VolumeTransfer.ExtensionOf(format);
            var transfer = new VolumeTransfer(KvmHost);
            string destination = transfer.NewVolumePath(Pool.Name, name);
            using ImagePassphrase? passphrase = Passphrases.From(Passphrase);
            using ImagePassphrase? newPassphrase = Passphrases.From(NewPassphrase);
            ConvertOptions options = ConvertParameters.Build(format, Compress, null, Preallocation.Off, null, null, Permissions.DefaultVolumeMode) with
            {
                SourcePassphrase = passphrase,
                Encryption = Passphrases.Encryption(Encrypt, passphrase, newPassphrase, IterationTime, file),
            };
            if (passphrase is not null && options.Encryption is null)
            {
                WriteWarning($"'{file}' is imported without -Encrypt: if it is encrypted, its contents are written to the new volume in the clear.");
            }

            if (ShouldProcess(file, $"Import as {format.ToQemuName()} volume {name} in pool {Pool.Name}"))
            {
                StorageVolume created = RunWithProgress("Import-Volume", $"Importing {System.IO.Path.GetFileName(file)}", (progress, token) => transfer.ConvertFile(file, destination, options, progress, token));
                WriteObject(created);
            }
        });
    }
}
